"""The selector's own answers (``Server._answer_here``) against a worker's, for the same bytes.

Each case sends the same raw requests to two servers of one root: the usual one, whose selector
answers cached small files itself when no worker is busy, and one whose ``app`` is wrapped by a
subclass, so that every request goes to a worker. The byte streams they send back (``Date``
aside) and their access-log lines must be the same.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from webserver import Request, Response, Server
from webserver._connection import Owner
from webserver._exchange import INLINE_REQUESTS
from webserver.testing import running_server

from .conftest import NET_TIMEOUT, connect, recv_until_closed, wait_for_owner
from .wire import WireReader, send_in_pieces

#: Ends every case: answered last if nothing before closed the connection.
_LAST = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
_DATE = re.compile(rb"\r\nDate: [^\r]*")


class _WorkerOnly(Server):
    """A server whose every request a worker answers (a subclass wrapping ``app``)."""

    def app(self, request: Request) -> Response:
        return super().app(request)


def _no_worker_busy(server: Server) -> bool:
    return server._running == server._lingering and not server._ready


def _settle(server: Server) -> None:
    deadline = time.monotonic() + NET_TIMEOUT
    while not _no_worker_busy(server):
        assert time.monotonic() < deadline, "a worker stayed busy"
        threading.Event().wait(0.002)


def _warm(server: Server, paths: tuple[str, ...]) -> None:
    """Have a worker read (and so cache) ``paths``, on a connection that then closes."""
    with connect(server) as sock:
        for path in paths:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            recv_until_closed(sock)
            break
    for path in paths[1:]:
        _warm(server, (path,))


def _whole(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)


def _half_close(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


_SENDERS: dict[str, Callable[[socket.socket, bytes], None]] = {
    "whole": _whole,
    "bytes": lambda sock, data: send_in_pieces(sock, data, range(1, len(data))),
    "halves": lambda sock, data: send_in_pieces(sock, data, [len(data) // 2]),
    "half-close": _half_close,
}


def _exchange(
    server: Server,
    raw: bytes,
    *,
    last: bytes = _LAST,
    send: Callable[[socket.socket, bytes], None] = _whole,
) -> bytes:
    """What ``server`` sends back to ``raw`` on a fresh, idle connection, ``Date`` removed."""
    with connect(server) as sock:
        wait_for_owner(server, Owner.HEAD)
        _settle(server)
        send(sock, raw + last)
        return _DATE.sub(b"", recv_until_closed(sock))


class _Lines(logging.Handler):
    """Access-log lines, their time stamps removed."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(re.sub(r"\[[^\]]*\] ", "", record.getMessage()))

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class _Pair:
    """Two servers of one root, and what each wrote to the access log."""

    def __init__(self, inline: Server, worker: Server, log: _Lines) -> None:
        self.inline = inline
        self.worker = worker
        self.log = log
        #: Requests the selector answered from memory (see ``_pair``).
        self.answered_here = 0
        self.here = 0
        #: How each exchange's bytes are sent.
        self.sender: Callable[[socket.socket, bytes], None] = _whole

    def both(
        self,
        raw: bytes,
        warm: tuple[str, ...] = ("/hello.txt",),
        then: Callable[[], None] = lambda: None,
        **kw: Any,
    ) -> bytes:
        """The same answer from both servers to ``raw`` (asserted), and the same access-log
        lines in the same order, after a worker of each cached ``warm`` and ``then`` ran; the
        answer."""
        _warm(self.inline, warm)
        _warm(self.worker, warm)
        then()
        self.log.take()
        before = self.answered_here
        here = _exchange(self.inline, raw, send=self.sender, **kw)
        self.here = self.answered_here - before
        here_lines = self.log.take()
        there = _exchange(self.worker, raw, send=self.sender, **kw)
        assert here == there
        assert here_lines == self.log.take()
        return here


@contextmanager
def _pair(www: Path, **settings: Any) -> Iterator[_Pair]:
    """Both servers of ``www`` with ``settings``, their access logs captured."""
    logger = logging.getLogger("webserver.access")
    log = _Lines()
    logger.addHandler(log)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    worker = _WorkerOnly(root=www, port=0, access_log=True, **settings)
    try:
        with (
            running_server(root=www, access_log=True, **settings) as inline,
            running_server(server=worker),
        ):
            pair = _Pair(inline, worker, log)
            real = inline._from_memory

            def counting(request: Request) -> Response:
                response = real(request)
                pair.answered_here += 1
                return response

            inline._from_memory = counting  # type: ignore[method-assign]
            yield pair
    finally:
        logger.removeHandler(log)
        logger.setLevel(old_level)


def _get(path: str, *fields: str, method: str = "GET", version: str = "1.1") -> bytes:
    head = f"{method} {path} HTTP/{version}\r\nHost: x\r\n"
    return (head + "".join(f + "\r\n" for f in fields) + "\r\n").encode("latin-1")


CASES = {
    "get": _get("/hello.txt"),
    "head": _get("/hello.txt", method="HEAD"),
    "http10": _get("/hello.txt", version="1.0"),
    "http10-keep-alive": _get("/hello.txt", "Connection: keep-alive", version="1.0"),
    "connection-close": _get("/hello.txt", "Connection: close"),
    "if-modified-since": _get("/hello.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"),
    "if-modified-since-old": _get("/hello.txt", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"),
    "if-none-match-star": _get("/hello.txt", "If-None-Match: *"),
    "if-none-match-other": _get("/hello.txt", 'If-None-Match: "nope"'),
    "if-match-other": _get("/hello.txt", 'If-Match: "nope"'),
    "if-match-star": _get("/hello.txt", "If-Match: *"),
    "if-unmodified-since-old": _get(
        "/hello.txt", "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT"
    ),
    "range": _get("/hello.txt", "Range: bytes=0-3"),
    "if-range-no-range": _get("/hello.txt", 'If-Range: "nope"'),
    "range-if-range": _get("/hello.txt", "Range: bytes=2-", 'If-Range: "nope"'),
    "range-unsatisfiable": _get("/hello.txt", "Range: bytes=99-"),
    "accept-encoding": _get("/big.txt", "Accept-Encoding: gzip"),
    "accept-encoding-identity": _get("/hello.txt", "Accept-Encoding: identity"),
    "big-identity": _get("/big.txt"),
    "query": _get("/hello.txt?x=1&y=%2F"),
    "percent-encoded": _get("/hell%6F.txt"),
    "percent-slash": _get("/docs%2Findex.html"),
    "dot-segments": _get("/docs/../hello.txt"),
    "encoded-dot-segments": _get("/docs/%2E%2E/hello.txt"),
    "escape-root": _get("/../secret.txt"),
    "encoded-escape-root": _get("/%2e%2e/secret.txt"),
    "nul": _get("/hello.txt%00"),
    "backslash": _get("/docs%5C..%5Chello.txt"),
    "bad-percent": _get("/hello%zz.txt"),
    "double-slash": _get("//hello.txt"),
    "trailing-slash": _get("/hello.txt/"),
    "dot-segment": _get("/docs/./index.html"),
    "empty-segment": _get("/docs//index.html"),
    "fragment": _get("/hello.txt#frag"),
    "semicolon": _get("/hello.txt;x"),
    "encoded-slash-end": _get("/hello.txt%2f"),
    "encoded-space": _get("/hello.txt%20"),
    "upper-case": _get("/HELLO.TXT"),
    "overlong-utf8": _get("/%c0%ae%c0%ae/secret.txt"),
    "well-known": _get("/.well-known/x.txt"),
    "hidden": _get("/.env"),
    "hidden-folder": _get("/.git/config"),
    "upload-temporary": _get("/.webserver-upload-x"),
    "in-progress-folder": _get("/.webserver-upload-in-progress/x"),
    "folder": _get("/docs/"),
    "folder-no-slash": _get("/docs"),
    "listing": _get("/empty/"),
    "absolute-form": (b"GET http://x/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"),
    "absolute-form-other-host": (b"GET http://y:81/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"),
    "no-host": b"GET /hello.txt HTTP/1.1\r\n\r\n",
    "no-host-http10": b"GET /hello.txt HTTP/1.0\r\n\r\n",
    "two-hosts": _get("/hello.txt", "Host: y"),
    "bad-host": b"GET /hello.txt HTTP/1.1\r\nHost: a b\r\n\r\n",
    "userinfo-host": b"GET /hello.txt HTTP/1.1\r\nHost: u@x\r\n\r\n",
    "options": _get("/hello.txt", method="OPTIONS"),
    "unknown-method": _get("/hello.txt", method="BREW"),
    "lower-case-method": _get("/hello.txt", method="get"),
    "expect": _get("/hello.txt", "Expect: 100-continue"),
    "obs-fold": _get("/hello.txt", "X-A: 1", " folded"),
    "space-before-colon": _get("/hello.txt", "X-A : 1"),
    "bare-lf": b"GET /hello.txt HTTP/1.1\nHost: x\n\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "http09": b"GET /hello.txt\r\n",
    "leading-blank-lines": b"\r\n\r\n" + _get("/hello.txt"),
    "oversized-head": _get("/hello.txt", "X-Big: " + "a" * 40_000),
    "long-target": _get("/" + "a" * 20_000),
}

#: Cases the selector must answer itself (else the test would prove nothing about it).
ANSWERED_HERE = {
    "get",
    "head",
    "http10",
    "http10-keep-alive",
    "connection-close",
    "if-modified-since",
    "if-none-match-star",
    "if-match-other",
    "if-match-star",
    "if-unmodified-since-old",
    "well-known",
}


#: The status each case's first answer must have (both servers agreeing is not enough).
STATUSES = {
    "get": 200,
    "head": 200,
    "http10": 200,
    "connection-close": 200,
    "if-modified-since": 304,
    "if-modified-since-old": 200,
    "if-none-match-star": 304,
    "if-none-match-other": 200,
    "if-match-other": 412,
    "if-match-star": 200,
    "if-unmodified-since-old": 412,
    "range": 206,
    "range-unsatisfiable": 416,
    "range-if-range": 200,
    "escape-root": 404,
    "encoded-escape-root": 404,
    "nul": 400,
    "backslash": 400,
    "bad-percent": 404,
    "hidden": 404,
    "hidden-folder": 404,
    "upload-temporary": 404,
    "in-progress-folder": 404,
    "folder-no-slash": 301,
    "no-host": 400,
    "two-hosts": 400,
    "bad-host": 400,
    "userinfo-host": 400,
    "unknown-method": 501,
    "lower-case-method": 501,
    "bare-lf": 400,
    "oversized-head": 431,
    "long-target": 414,
    "dot-segment": 200,
    "overlong-utf8": 400,
    "well-known": 200,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_selector_answers_like_a_worker(www: Path, name: str) -> None:
    """Each request (then a closing GET) gets the same bytes and access-log lines whether the
    selector answers it from memory or a worker does."""
    (www / "big.txt").write_bytes(b"compress me " * 200)
    (www / ".well-known").mkdir()
    (www / ".well-known" / "x.txt").write_bytes(b"known\n")
    warm = ("/hello.txt", "/big.txt", "/docs/index.html", "/.well-known/x.txt")
    with _pair(www) as pair:
        answer = pair.both(CASES[name], warm=warm)
        if name in ANSWERED_HERE:
            assert pair.here >= 1
    if name in STATUSES:
        assert answer.startswith(f"HTTP/1.1 {STATUSES[name]} ".encode())


#: Requests a server answers without closing, mixing what the selector answers with what it
#: leaves to a worker (bodies, h11-only heads, errors that keep the connection, unknown methods).
KEEP_ALIVE = [
    _get("/hello.txt"),
    _get("/hello.txt", method="HEAD"),
    _get("/big.txt", method="HEAD"),
    b"POST /docs/index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    _get("/hello.txt", "If-None-Match: *"),
    b"DELETE /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    _get("/hello.txt", "Range: bytes=-4"),
    _get("/big.txt", "Accept-Encoding: gzip"),
    _get("/docs/index.html"),
    _get("/hello.txt", method="BREW"),
    b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    _get("/.hidden.txt"),
    _get("/nothing-here"),
    _get("/hello.txt", method="OPTIONS"),
    _get("/docs/"),
    _get("/empty/"),
    _get("/hello.txt", "Expect: 100-continue"),
    _get("/hello.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"),
    b"PUT /docs/index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nzz",
    _get("/hello.txt"),
    _get("/big.txt"),
] + [_get("/hello.txt")] * (INLINE_REQUESTS + 2)

SETTINGS: dict[str, dict[str, Any]] = {
    "default": {"read_only": True},
    "no-listing": {"read_only": True, "listing": False},
    "show-hidden": {"read_only": True, "show_hidden": True},
    "no-compress": {"read_only": True, "compress": False},
    "max-requests": {"read_only": True, "max_requests_per_connection": 5},
    "combined-log": {"read_only": True, "access_log_format": "combined"},
    "health": {"read_only": True, "health": "/hello.txt"},
    "behind-proxy": {"read_only": True, "trusted_proxies": ("127.0.0.1",)},
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_mixed_pipeline_is_answered_like_a_worker_would(www: Path, name: str) -> None:
    """A pipeline mixing cached GETs with bodies, h11-only heads, unknown methods and errors
    is answered in order, each request once, with the same bytes and log lines as a worker
    alone gives, under each setting."""
    (www / "big.txt").write_bytes(b"compress me " * 200)
    (www / ".hidden.txt").write_bytes(b"hidden\n")
    forwarded = b"X-Forwarded-For: 192.0.2.7\r\nReferer: http://r/\r\n"
    stream = b"".join(r.replace(b"Host: x\r\n", b"Host: x\r\n" + forwarded) for r in KEEP_ALIVE)
    with _pair(www, **SETTINGS[name]) as pair:
        answer = pair.both(stream, warm=("/hello.txt", "/big.txt", "/docs/index.html"))
        assert pair.here >= (0 if name == "health" else 1)  # health: its own handler
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    expected = 5 if name == "max-requests" else len(KEEP_ALIVE) + 1
    assert len(statuses) == expected, b" ".join(statuses)


@pytest.mark.parametrize("how", ["bytes", "halves", "half-close"])
def test_a_pipeline_split_or_half_closed_is_answered_like_a_worker_would(
    www: Path, how: str
) -> None:
    """A pipeline of cached GETs sent byte by byte, in two pieces, or followed by the client
    closing its side, gets the same answers from the selector as from a worker."""
    stream = b"".join([_get("/hello.txt"), _get("/hello.txt", method="HEAD")] * 3)
    stream += _get("/docs/index.html", "Connection: close")
    with _pair(www, read_only=True) as pair:
        pair.sender = _SENDERS[how]
        answer = pair.both(stream, warm=("/hello.txt", "/docs/index.html"), last=b"")
        assert pair.here >= 1
    assert answer.count(b"HTTP/1.1 200 OK") == 7


def _rewrite(path: Path) -> None:
    path.write_bytes(b"fresh content, longer than before\n")


def _rewrite_same_size_and_time(path: Path) -> None:
    st = path.stat()
    path.write_bytes(b"x" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _replace_by_link_out(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent.parent / "secret.txt")


def _move_out_and_link(path: Path) -> None:
    outside = path.parent.parent / "moved.txt"
    path.rename(outside)
    path.symlink_to(outside)


def _replace_folder_by_link_out(path: Path) -> None:
    folder = path.parent
    outside = folder.parent.parent / "elsewhere"
    outside.mkdir()
    (outside / path.name).write_bytes(b"TOP SECRET\n")
    folder.rename(folder.parent.parent / "docs-moved")
    folder.symlink_to(outside)


def _move_folder_out_and_link(path: Path) -> None:
    folder = path.parent
    outside = folder.parent.parent / "docs-moved"
    folder.rename(outside)
    folder.symlink_to(outside)


def _replace_by_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _make_unreadable(path: Path) -> None:
    path.chmod(0)


CHANGES: dict[str, tuple[str, Callable[[Path], None], bytes]] = {
    # name: (path, change, what a GET of it must not return)
    "rewritten": ("/hello.txt", _rewrite, b"hello, world\n"),
    "deleted": ("/hello.txt", Path.unlink, b"hello, world\n"),
    "replaced-by-link-out": ("/hello.txt", _replace_by_link_out, b"TOP SECRET"),
    "moved-out-and-linked": ("/hello.txt", _move_out_and_link, b"hello, world\n"),
    "folder-replaced-by-link-out": ("/docs/index.html", _replace_folder_by_link_out, b"SECRET"),
    "folder-moved-out-and-linked": ("/docs/index.html", _move_folder_out_and_link, b"SECRET"),
    "replaced-by-folder": ("/hello.txt", _replace_by_folder, b"hello, world\n"),
    "made-unreadable": ("/hello.txt", _make_unreadable, b"TOP SECRET"),
    "same-size-and-time": ("/hello.txt", _rewrite_same_size_and_time, b"TOP SECRET"),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_file_changed_after_it_was_cached_is_answered_like_a_worker_would(
    www: Path, name: str
) -> None:
    """A cached file rewritten, deleted, replaced by a symlink or folder leading out of the root,
    or made unreadable, gets the same answer from the selector as from a worker: fresh content
    or 404, never what lies outside the root."""
    path, change, forbidden = CHANGES[name]
    with _pair(www, read_only=True) as pair:
        answer = pair.both(
            _get(path) + _get(path, method="HEAD"),
            warm=(path,),
            then=lambda: change(www / path.lstrip("/")),
        )
    assert forbidden not in answer
    # The cache rule's limits (docs/security.md): the very same file, by its identity.
    if name == "same-size-and-time":
        assert answer.count(b"hello, world\n") == 2
    if name == "folder-moved-out-and-linked":
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"<h1>docs</h1>" in answer


#: Bounds of the load tests below: clients, requests each, and the seconds all may take.
STUCK_CLIENTS = 8
FLOOD_CLIENTS = 16
FLOOD_REQUESTS = 50
FLOOD_SECONDS = 20.0


def test_clients_not_reading_their_answers_never_block_the_selector(www: Path) -> None:
    """Several clients pipeline GETs of a cached 60 KiB file and HEADs, and read nothing: each
    is parked once the kernel's buffers are full, and a probe connection's cached GETs are
    still answered at once, by the selector itself."""
    (www / "60k.bin").write_bytes(b"x" * 60_000)
    stream = (_get("/60k.bin") + _get("/60k.bin", method="HEAD")) * 128
    with _pair(www) as pair:
        server = pair.inline
        _warm(server, ("/60k.bin", "/hello.txt"))
        stuck = []
        try:
            for _ in range(STUCK_CLIENTS):
                sock = socket.socket()
                stuck.append(sock)
                sock.settimeout(NET_TIMEOUT)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(server.listen())
                _settle(server)
                sock.sendall(stream)
            wait_for_owner(server, Owner.SEND, count=STUCK_CLIENTS)
            before = pair.answered_here
            with connect(server) as probe:
                reader = WireReader(probe)
                started = time.monotonic()
                for _ in range(5):
                    wait_for_owner(server, Owner.HEAD)
                    _settle(server)
                    probe.sendall(_get("/hello.txt"))
                    assert reader.read().body == b"hello, world\n"
                assert time.monotonic() - started < NET_TIMEOUT / 2
            assert pair.answered_here - before == 5
        finally:
            for sock in stuck:
                sock.close()


def _flood(server: Server, errors: list[BaseException]) -> None:
    try:
        with connect(server) as sock:
            reader = WireReader(sock)
            sock.sendall((_get("/hello.txt") + _get("/hello.txt", method="HEAD")) * FLOOD_REQUESTS)
            for _ in range(FLOOD_REQUESTS):
                assert reader.read().body == b"hello, world\n"
                head = reader.read(head_only=True)
                assert head.status == 200 and head.header("Content-Length") == "13"
            sock.sendall(_LAST)
            assert reader.read().body == b"hello, world\n"
            assert reader.at_eof()
    except BaseException as exc:  # reported by the test's thread
        errors.append(exc)


def test_a_flood_of_pipelined_requests_from_many_clients_is_answered_in_order(
    www: Path,
) -> None:
    """Many clients each pipelining a hundred cached GETs and HEADs get every answer once, in
    order, within a bounded time, the selector answering part of them itself."""
    errors: list[BaseException] = []
    with _pair(www) as pair:
        _warm(pair.inline, ("/hello.txt",))
        threads = [
            threading.Thread(target=_flood, args=(pair.inline, errors))
            for _ in range(FLOOD_CLIENTS)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(FLOOD_SECONDS)
        assert not any(thread.is_alive() for thread in threads), "the flood was not answered"
        assert time.monotonic() - started < FLOOD_SECONDS
        assert pair.answered_here > 0
    assert errors == []


def test_a_pipeline_longer_than_one_read_is_answered_like_a_worker_would(www: Path) -> None:
    """A pipeline of cached GETs with large heads, far more than one read takes, gets every
    answer in order from the selector's turns and the workers it hands over to."""
    padding = "X-Pad: " + "p" * 2000
    stream = b"".join(_get("/hello.txt", padding, f"X-N: {n}") for n in range(120))
    with _pair(www, read_only=True) as pair:
        answer = pair.both(stream)
        assert pair.here >= 1
    assert answer.count(b"hello, world\n") == 121


def _trickle(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` a byte every 20 ms until the server closes, within a bounded time."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return
        threading.Event().wait(0.02)


def test_a_head_trickled_after_cached_answers_is_cut_like_a_worker_would(www: Path) -> None:
    """After a cached GET, a second head sent a byte at a time is cut at the head deadline
    from its first byte (408), by the selector's turns as by a worker's."""
    head = _get("/hello.txt", "X-Slow: " + "s" * 200)
    with _pair(www, read_only=True, header_timeout=0.4) as pair:

        def first_whole_then_trickled(sock: socket.socket, data: bytes) -> None:
            sock.sendall(_get("/hello.txt"))
            _trickle(sock, data)

        pair.sender = first_whole_then_trickled
        started = time.monotonic()
        answer = pair.both(head, last=b"")
        assert time.monotonic() - started < NET_TIMEOUT
        assert pair.here >= 1
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1 408 " in answer


def _curl(curl: str, server: Server, *args: str) -> bytes:
    host, port = server.listen()
    url = f"http://{host}:{port}/"
    argv = [curl, "-sS", "-i", "--max-time", str(NET_TIMEOUT), *args]
    urls = [url + "hello.txt", url + "hello.txt", url + "big.txt", url + "hello.txt"]
    done = subprocess.run([*argv, *urls], capture_output=True, timeout=NET_TIMEOUT, check=True)
    return _DATE.sub(b"", done.stdout)


@pytest.mark.parametrize(
    "args",
    [(), ("-I",), ("--compressed",), ("--http1.0",), ("-H", "If-None-Match: *")],
    ids=["get", "head", "compressed", "http10", "if-none-match"],
)
def test_curl_gets_the_same_answers_from_the_selector_and_a_worker(
    www: Path, args: tuple[str, ...]
) -> None:
    """curl fetching cached files over one connection (GET, HEAD, with compression, over
    HTTP/1.0, conditional) gets the same bytes from the selector's turns as from a worker."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (.ci/run installs it)")
    (www / "big.txt").write_bytes(b"compress me " * 200)
    with _pair(www, read_only=True) as pair:
        _warm(pair.inline, ("/hello.txt", "/big.txt"))
        _warm(pair.worker, ("/hello.txt", "/big.txt"))
        _settle(pair.inline)
        here = _curl(curl, pair.inline, *args)
        assert _curl(curl, pair.worker, *args) == here
        # A coding is for a worker to choose: with --compressed the selector answers nothing.
        assert pair.answered_here >= (0 if "--compressed" in args else 1)
    assert here.count(b"HTTP/1.") == 4
