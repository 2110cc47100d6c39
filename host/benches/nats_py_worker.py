"""What a user would write instead of asya: a plain Python worker on nats-py that runs the same
handler for a 3-hop pipeline over JetStream (consume → handler → publish → ack), in one process.
Used by benches/nats_pipeline.rs as the comparison.

Each hop keeps up to IN_FLIGHT messages in flight (received, not yet acknowledged), as asya does
(`sandbox.maxInFlight`): it fetches as many as it has free slots and runs one asyncio task per
message (handler → publish, awaiting JetStream's confirmation → ack).

Usage: python nats_py_worker.py NATS_URL STREAM PREFIX MESSAGES HANDLERS_DIR [IN_FLIGHT]
IN_FLIGHT defaults to $BENCH_CONCURRENCY, else 32.
Prints the seconds taken to move MESSAGES messages through the three hops. A message that fails
on a hop (handler or publish) is terminated there and counted, as is a failed ack; if any failed,
or the pipeline stalls, the counts go to stderr and the exit status is 1.
"""

import asyncio
import contextlib
import json
import os
import sys
import time

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy

url, stream, prefix, total, handlers = sys.argv[1:6]
total = int(total)
in_flight = int(
    sys.argv[6] if len(sys.argv) > 6 else os.environ.get("BENCH_CONCURRENCY", "32")
)
sys.path.insert(0, handlers)
from behaviours import behave

HOPS = ["a", "b", "c"]
#: Seconds without a message ending (either way) after which the run is declared stalled.
STALL_SECONDS = 30


class Tally:
    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0
        self.failed_acks = 0
        self.errors: dict[str, int] = {}
        self.done = asyncio.Event()
        self.progress = time.monotonic()

    def _error(self, error: BaseException) -> None:
        kind = f"{type(error).__name__}: {error}"
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def ended(self, ok: bool, error: BaseException | None = None) -> None:
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
            self._error(error)
        self.progress = time.monotonic()
        if self.succeeded + self.failed >= total:
            self.done.set()

    def ack_failed(self, error: BaseException) -> None:
        self.failed_acks += 1
        self._error(error)


async def hop(js, name: str, nxt: str, tally: Tally) -> None:
    sub = await js.pull_subscribe(
        f"{prefix}.{name}",
        durable=f"py-{name}",
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, max_ack_pending=max(512, in_flight)
        ),
    )
    last = nxt == "sink"
    running: set[asyncio.Task] = set()

    async def process(msg) -> None:
        try:
            envelope = json.loads(msg.data)
            envelope["payload"] = behave(envelope["payload"])
            await js.publish(f"{prefix}.{nxt}", json.dumps(envelope).encode())
        # A handler may raise anything; the message fails either way.
        except Exception as exc:  # noqa: BLE001
            with contextlib.suppress(nats.errors.Error):
                await msg.term()  # not redelivered: the message ends here, failed
            tally.ended(False, exc)
            return
        try:
            await msg.ack()
        except nats.errors.Error as exc:
            # The message went on; a redelivery would duplicate it.
            tally.ack_failed(exc)
        if last:
            tally.ended(True)

    try:
        while not tally.done.is_set():
            free = in_flight - len(running)
            if free == 0:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await sub.fetch(free, timeout=0.5)
            except TimeoutError:
                continue
            for msg in msgs:
                task = asyncio.create_task(process(msg))
                running.add(task)
                task.add_done_callback(running.discard)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def main() -> int:
    nc = await nats.connect(url)
    js = nc.jetstream()
    # The retention asya's namespace streams use, so both sides pay the same server work.
    await js.add_stream(
        name=stream, subjects=[f"{prefix}.>"], retention=RetentionPolicy.WORK_QUEUE
    )
    for i in range(total):
        envelope = {
            "id": str(i),
            "route": {"prev": [], "curr": "a", "next": ["b", "c"]},
            "headers": {},
            "payload": {"text": "hello world", "n": 1},
        }
        await js.publish(f"{prefix}.a", json.dumps(envelope).encode())
    tally = Tally()
    started = time.perf_counter()
    tally.progress = time.monotonic()
    nexts = ["b", "c", "sink"]
    tasks = [asyncio.create_task(hop(js, h, n, tally)) for h, n in zip(HOPS, nexts)]
    stalled = False
    while not tally.done.is_set():
        # A hop itself failed (its subscription, its fetch).
        if any(t.done() for t in tasks):
            break
        if time.monotonic() - tally.progress > STALL_SECONDS:
            stalled = True
            break
        try:
            await asyncio.wait_for(tally.done.wait(), timeout=1)
        except TimeoutError:
            pass
    elapsed = time.perf_counter() - started
    tally.done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await nc.close()
    hop_errors = [t.exception() for t in tasks if not t.cancelled() and t.exception()]
    if (
        tally.failed
        or tally.failed_acks
        or stalled
        or hop_errors
        or tally.succeeded < total
    ):
        print(
            f"nats-py worker: {tally.succeeded} of {total} messages succeeded, "
            f"{tally.failed} failed, {tally.failed_acks} acks failed"
            + (f", stalled for {STALL_SECONDS} s" if stalled else ""),
            file=sys.stderr,
        )
        for kind, count in sorted(tally.errors.items()):
            print(f"  {count} × {kind}", file=sys.stderr)
        for error in hop_errors:
            print(f"  a hop failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(elapsed)
    return 0


sys.exit(asyncio.run(main()))
