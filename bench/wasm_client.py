"""The streaming client of the wasm benchmark, run in its own process so that it is not the thing measured.

    python -m bench.wasm_client fetch URL --runs N      # sequential GETs: TTFB, seconds, bytes
    python -m bench.wasm_client hold URL --connections 1000 --hold-s 10

Both print one JSON object on stdout. Raw asyncio streams over HTTP/1.1 rather than an HTTP
library: the figures are the time from the request's last byte written to the first *body* byte
(not the headers, which a server may send before the guest writes anything) and to the last one,
and a library's buffering would blur both. Bodies are checked against the stream example's
pattern (byte k is k % 256), so a system that sends the wrong bytes fails the run instead of
looking fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

PATTERN = bytes(range(256)) * 4096  # 1 MiB of the stream example's bytes, starting at offset 0


class ClientError(RuntimeError):
    """The server answered something other than a 200 with a well-formed, correct body."""


@dataclass
class Fetch:
    ttfb_ms: float = float("nan")
    total_s: float = float("nan")
    body_bytes: int = 0


@dataclass
class BodyReader:
    """Consumes a response body (chunked or sized), checking each byte against the pattern."""

    check: bool
    received: int = 0
    first_byte_at: float | None = None

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        if self.check:
            view = memoryview(data)
            while view:
                start = self.received % 256
                take = min(len(view), len(PATTERN) - 256)
                if view[:take] != PATTERN[start : start + take]:
                    at = next(i for i in range(take) if view[i] != PATTERN[start + i])
                    raise ClientError(f"body differs from the stream pattern at byte {self.received + at}")
                self.received += take
                view = view[take:]
        else:
            self.received += len(data)


def request_bytes(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ClientError(f"only http://HOST:PORT/... URLs are supported, not {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname
    port = parts.port or 80
    head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    return host, port, head.encode()


async def read_head(reader: asyncio.StreamReader) -> dict[str, str]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise ClientError(f"status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str], body: BodyReader) -> None:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers are expected
                return
            left = size
            while left:
                data = await reader.read(min(left, 1 << 20))
                if not data:
                    raise ClientError("connection closed inside a chunk")
                body.feed(data)
                left -= len(data)
            if await reader.readexactly(2) != b"\r\n":
                raise ClientError("malformed chunk framing")
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            data = await reader.read(min(left, 1 << 20))
            if not data:
                raise ClientError(f"connection closed with {left} body bytes missing")
            body.feed(data)
            left -= len(data)
    else:
        while data := await reader.read(1 << 20):
            body.feed(data)


async def fetch_once(url: str, check: bool) -> Fetch:
    host, port, head = request_bytes(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head)
        await writer.drain()
        sent = time.perf_counter()
        headers = await read_head(reader)
        body = BodyReader(check)
        await read_body(reader, headers, body)
        done = time.perf_counter()
    finally:
        writer.close()
    ttfb = (body.first_byte_at - sent) * 1000 if body.first_byte_at is not None else float("nan")
    return Fetch(ttfb, done - sent, body.received)


async def fetch_many(url: str, runs: int, check: bool, expect_bytes: int | None) -> dict[str, object]:
    out = []
    for _ in range(runs):
        f = await fetch_once(url, check)
        if expect_bytes is not None and f.body_bytes != expect_bytes:
            raise ClientError(f"{f.body_bytes} body bytes, expected {expect_bytes}")
        out.append(asdict(f))
    return {"runs": out}


@dataclass
class HoldStats:
    opened: int = 0
    answered: int = 0  # connections whose response head arrived
    with_body: int = 0  # connections that received at least one body byte
    errors: list[str] = field(default_factory=list)
    ramp_s: float = 0.0


async def hold(url: str, connections: int, hold_s: float, check: bool = True) -> dict[str, object]:
    """Open `connections` GETs at once, read whatever each body sends, and close them all after
    `hold_s` seconds counted from when the last request was written."""
    host, port, head = request_bytes(url)
    stats = HoldStats()
    all_sent = asyncio.Event()
    started = time.perf_counter()

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            stats.errors.append(f"connect: {exc}")
            return
        stats.opened += 1
        if stats.opened == connections:
            all_sent.set()
        body = BodyReader(check=check)
        try:
            writer.write(head)
            await writer.drain()
            headers = await read_head(reader)
            stats.answered += 1
            await read_body(reader, headers, body)
        except (OSError, asyncio.IncompleteReadError, ClientError) as exc:
            stats.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if body.received:
                stats.with_body += 1
            writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(connections)]
    try:
        await asyncio.wait_for(all_sent.wait(), timeout=60)
    except TimeoutError:
        stats.errors.append(f"only {stats.opened} of {connections} connections opened within 60 s")
    stats.ramp_s = time.perf_counter() - started
    await asyncio.sleep(hold_s)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = asdict(stats)
    result["errors"] = stats.errors[:5]
    result["error_count"] = len(stats.errors)
    return result


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n), hard) if hard != resource.RLIM_INFINITY else max(soft, n)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < n:
        raise ClientError(f"cannot open {n} files: RLIMIT_NOFILE hard limit is {hard}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wasm_client", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="sequential GETs; TTFB, total time and bytes of each")
    f.add_argument("url")
    f.add_argument("--runs", type=int, default=3)
    f.add_argument("--expect-bytes", type=int, default=None)
    f.add_argument("--no-check", action="store_true", help="do not check the body's bytes")
    h = sub.add_parser("hold", help="hold N streaming GETs open at once")
    h.add_argument("url")
    h.add_argument("--connections", type=int, default=1000)
    h.add_argument("--hold-s", type=float, default=10.0)
    h.add_argument("--no-check", action="store_true", help="do not check the body's bytes")
    args = p.parse_args(argv)
    try:
        if args.cmd == "fetch":
            result = asyncio.run(fetch_many(args.url, args.runs, not args.no_check, args.expect_bytes))
        else:
            raise_nofile(args.connections + 100)
            result = asyncio.run(hold(args.url, args.connections, args.hold_s, not args.no_check))
    except (ClientError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
