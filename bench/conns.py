#!/usr/bin/env python3
"""Many client connections, held open, for bench/scale.sh.

    conns.py idle N URL   open N keep-alive connections, send one GET on each
                          and read its response, then hold them all open
    conns.py slow N URL   open N connections and send a GET one byte per
                          second on each, for as long as it runs

Prints "ready N" once every connection is open (idle: has had its answer),
then holds until stdin closes or SIGTERM. Loopback only: URL must be
http://127.x.x.x:PORT/PATH. Exits non-zero when a connection fails before
ready, naming how many did.
"""

import asyncio
import re
import signal
import sys


def parse(url):
    m = re.fullmatch(r"http://(127\.\d+\.\d+\.\d+):(\d+)(/.*)", url)
    if not m:
        sys.exit(f"conns.py: {url} is not an http://127.x.x.x:PORT/PATH URL")
    return m.group(1), int(m.group(2)), m.group(3)


async def read_response(reader):
    """Reads one response with a Content-Length body; returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length is None:
        raise RuntimeError("a response without Content-Length")
    await reader.readexactly(int(length.group(1)))
    return status


async def idle(host, port, path, sem):
    async with sem:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-User: alice\r\n\r\n".encode())
        await writer.drain()
        status = await read_response(reader)
        if status != 200:
            raise RuntimeError(f"status {status}")
        return writer


async def slow(host, port, path, opened):
    reader, writer = await asyncio.open_connection(host, port)
    opened.append(writer)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-User: alice\r\n\r\n".encode()
    for i in range(len(request)):
        writer.write(request[i : i + 1])
        await writer.drain()
        await asyncio.sleep(1)
    await reader.read(1)


async def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("idle", "slow"):
        sys.exit(__doc__)
    mode, n = sys.argv[1], int(sys.argv[2])
    host, port, path = parse(sys.argv[3])
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_reader(sys.stdin, lambda: stop.done() or (sys.stdin.read(1) == "" and stop.set_result(None)))
    if mode == "idle":
        # A few hundred handshakes at a time: the listen backlog is finite.
        sem = asyncio.Semaphore(200)
        results = await asyncio.gather(*(idle(host, port, path, sem) for _ in range(n)), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            sys.exit(f"conns.py: {len(failed)} of {n} connections failed, first: {failed[0]!r}")
        print(f"ready {n}", flush=True)
        await stop
    else:
        opened = []
        tasks = []
        for _ in range(n):
            tasks.append(asyncio.ensure_future(slow(host, port, path, opened)))
        while len(opened) < n and not stop.done():
            await asyncio.sleep(0.1)
        print(f"ready {len(opened)}", flush=True)
        await stop
        for task in tasks:
            task.cancel()


asyncio.run(main())
