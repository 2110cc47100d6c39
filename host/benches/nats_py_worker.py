"""What a user would write instead of asya: a plain Python worker on nats-py that runs the same
handler for a 3-hop pipeline over JetStream (consume → handler → publish → ack), one asyncio
task per hop, in one process. Used by benches/nats_pipeline.rs as the comparison.

Usage: python nats_py_worker.py NATS_URL STREAM PREFIX MESSAGES HANDLERS_DIR
Prints the seconds taken to move MESSAGES messages through the three hops.
"""

import asyncio
import json
import sys
import time

import nats
from nats.js.api import AckPolicy, ConsumerConfig

url, stream, prefix, total, handlers = sys.argv[1:6]
total = int(total)
sys.path.insert(0, handlers)
from behaviours import behave

HOPS = ["a", "b", "c"]


async def hop(js, name: str, nxt: str, done: asyncio.Event, counter: list[int]) -> None:
    sub = await js.pull_subscribe(
        f"{prefix}.{name}",
        durable=f"py-{name}",
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=512),
    )
    while not done.is_set():
        try:
            msgs = await sub.fetch(64, timeout=0.5)
        except TimeoutError:
            continue
        for msg in msgs:
            envelope = json.loads(msg.data)
            envelope["payload"] = behave(envelope["payload"])
            await js.publish(f"{prefix}.{nxt}", json.dumps(envelope).encode())
            await msg.ack()
            if nxt == "sink":
                counter[0] += 1
                if counter[0] >= total:
                    done.set()


async def main() -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{prefix}.>"])
    for i in range(total):
        envelope = {
            "id": str(i),
            "route": {"prev": [], "curr": "a", "next": ["b", "c"]},
            "headers": {},
            "payload": {"text": "hello world", "n": 1},
        }
        await js.publish(f"{prefix}.a", json.dumps(envelope).encode())
    done = asyncio.Event()
    counter = [0]
    started = time.perf_counter()
    nexts = ["b", "c", "sink"]
    tasks = [
        asyncio.create_task(hop(js, h, n, done, counter)) for h, n in zip(HOPS, nexts)
    ]
    await done.wait()
    elapsed = time.perf_counter() - started
    for t in tasks:
        t.cancel()
    print(elapsed)
    await nc.close()


asyncio.run(main())
