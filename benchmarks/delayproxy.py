"""A TCP proxy on 127.0.0.1 that delays every chunk by a fixed time in each direction.

Why: the kernel here has no netem, and a client's design (pipelining, several connections) only
shows its worth when each round trip costs something. This adds ``--delay`` milliseconds (10 by
default, so 20 ms per round trip) to the bytes going each way, without limiting bandwidth: every
chunk read is written ``--delay`` ms later, in order, while later chunks are already on their way
(latency, not a queue).

It only listens on and connects to 127.0.0.1. Its first stdout line is
``delay proxy on http://127.0.0.1:PORT/ -> TARGET_PORT`` (the port is free when ``--port 0``).

Usage: python benchmarks/delayproxy.py --target PORT [--port 0] [--delay 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

HOST = "127.0.0.1"
#: Bytes read at a time: large enough that 16 MiB bodies cross in few chunks.
CHUNK = 256 * 1024


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy one direction, each chunk written ``delay`` s after it was read (order kept)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while data := await reader.read(CHUNK):
                queue.put_nowait((loop.time() + delay, data))
        except OSError:
            pass
        queue.put_nowait((loop.time() + delay, b""))

    reading = asyncio.create_task(read())
    try:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                break
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        reading.cancel()


async def _serve(port: int, target: int, delay: float) -> None:
    async def handle(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(HOST, target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _carry(client_reader, server_writer, delay),
            _carry(server_reader, client_writer, delay),
        )
        for writer in (client_writer, server_writer):
            with contextlib.suppress(OSError):
                writer.close()

    server = await asyncio.start_server(handle, HOST, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"delay proxy on http://{HOST}:{bound}/ -> {target}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=int, required=True, help="port on 127.0.0.1 to reach")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument("--delay", type=float, default=10.0, help="milliseconds each way")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.target, args.delay / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
