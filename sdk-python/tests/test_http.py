"""`asya.http` in the native runtime: a small HTTP/1.1 client on asyncio streams."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import asya.http


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        status = 404 if self.path == "/missing" else 200
        self.reply(status, {"path": self.path, "agent": self.headers.get("x-agent")})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.reply(200, {"echo": json.loads(body), "type": self.headers["content-type"]})

    def reply(self, status: int, value: object) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def test_get_post_json_and_headers(server: str) -> None:
    async def main() -> tuple[asya.http.Response, asya.http.Response]:
        got = await asya.http.get(f"{server}/a?b=1", headers={"X-Agent": "judge"})
        posted = await asya.http.post(f"{server}/chat", json={"prompt": "ü"})
        return got, posted

    got, posted = asyncio.run(main())
    assert got.status == 200
    assert got.json() == {"path": "/a?b=1", "agent": "judge"}
    assert got.header("Content-Type") == "application/json"
    assert posted.json() == {"echo": {"prompt": "ü"}, "type": "application/json"}


def test_many_requests_in_flight_at_once(server: str) -> None:
    async def main() -> list[asya.http.Response]:
        return await asyncio.gather(*(asya.http.get(f"{server}/{i}") for i in range(20)))

    replies = asyncio.run(main())
    assert [r.json()["path"] for r in replies] == [f"/{i}" for i in range(20)]


def test_chunked_responses_are_joined(server: str) -> None:
    reply = asyncio.run(asya.http.get(f"{server}/chunked"))
    assert reply.text() == "hello chunked world"


def test_errors_are_precise(server: str) -> None:
    missing = asyncio.run(asya.http.get(f"{server}/missing"))
    with pytest.raises(asya.http.HTTPStatusError, match="HTTP 404"):
        missing.raise_for_status()
    with pytest.raises(asya.http.HTTPError, match=r"timed out after 0\.2 s"):
        asyncio.run(asya.http.get(f"{server}/slow", timeout=0.2))
    with pytest.raises(asya.http.HTTPError, match="only http:// and https://"):
        asyncio.run(asya.http.get("ftp://example.com/x"))
    with pytest.raises(asya.http.HTTPError, match="failed"):
        asyncio.run(asya.http.get("http://127.0.0.1:1/"))
    with pytest.raises(TypeError, match="body or json"):
        asyncio.run(asya.http.post(f"{server}/x", body="a", json={}))
