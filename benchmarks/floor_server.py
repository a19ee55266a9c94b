"""The floor of any Python server on this design: an epoll loop that parses nothing.

Why: issue 14 asks for half of nginx's requests per CPU-second. This server does the least a
Python HTTP server over non-blocking sockets can do per keep-alive request -- one ``epoll``
wake-up shared by the connections ready at once, one ``recv``, a count of the heads received, one
``send`` of a canned 1 KiB response per head -- and nothing else: no parsing, no validation, no
file check, no timeouts, no logging. ``bench_cpu.py --peers floor`` measures it the same way as
the real servers; whatever it costs per request, no Python server of this shape costs less.

Not a server to use: it answers every head with the same response, and assumes the kernel takes
each answer whole.

Usage: python benchmarks/floor_server.py   (prints its URL; port chosen by the kernel)
"""

from __future__ import annotations

import select
import socket

#: What every request head gets: the head our server sends for a 1 KiB file, and the body.
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Dec 2026 03:00:00 GMT\r\nServer: floor\r\n"
    b"Content-Type: application/octet-stream\r\nLast-Modified: Sun, 06 Dec 2026 02:00:00 GMT\r\n"
    b'ETag: "1-2-400"\r\nAccept-Ranges: bytes\r\nX-Content-Type-Options: nosniff\r\n'
    b"Content-Length: 1024\r\n\r\n" + b"x" * 1024
)


def main() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    connections: dict[int, socket.socket] = {}
    print(f"Serving nothing on http://127.0.0.1:{listener.getsockname()[1]}/", flush=True)
    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    connections[sock.fileno()] = sock
                    poller.register(sock.fileno(), select.EPOLLIN)
                continue
            sock = connections[fd]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                del connections[fd]
                sock.close()
                continue
            heads = data.count(b"\r\n\r\n")
            if heads:
                sock.send(RESPONSE * heads)


if __name__ == "__main__":
    main()
