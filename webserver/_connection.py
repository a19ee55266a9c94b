"""One client connection: a socket and the h11 state machine that frames its bytes.

Rules this module keeps:

* Only the thread that owns the connection at a moment calls its methods (the selector thread
  while it is parked, one worker while it is served); ``lock`` only guards the hand-over.
* Output is gathered in a buffer and written with one ``send`` when the worker is about to wait
  for the client, so answers to pipelined requests leave in one write, in order.
* It frames bytes and nothing else: it knows requests and responses, not files or routes.
* Input gathers in ``inbuf`` while plain exchanges (:mod:`webserver._fastpath`) are framed
  without h11; :meth:`engage_h11` hands it all to h11, which then reads the connection until the
  next request boundary (:meth:`release_h11`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable
from typing import Any, cast

import h11

from ._chunked import ChunkedBodyCheck, feed_body_check

#: Bytes asked of the kernel per ``recv``: large enough for a pipelined burst of small requests.
RECV_SIZE = 64 * 1024
#: Largest piece handed to one ``sendfile`` call (the kernel caps a call near 2 GiB anyway).
SENDFILE_CHUNK = 1 << 30
#: Output is written once this much has gathered, even if more responses are coming.
FLUSH_THRESHOLD = 64 * 1024
#: After answering with an error, read (and discard) at most this much of what the client still
#: sends before closing, so it sees the response rather than a connection reset (RFC 9112 §9.6).
LINGER_BYTES = 256 * 1024
#: ...and for at most this many seconds.
LINGER_SECONDS = 2.0


class _FileSlice:
    """A stand-in for body bytes that h11 passes through untouched, sent by ``sendfile``."""

    __slots__ = ("count", "file", "offset")

    def __init__(self, file: Any, offset: int, count: int) -> None:
        self.file = file
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count


class Connection:
    """A server-side HTTP/1.x connection; see the module docstring for its rules."""

    __slots__ = (
        "_max_head_size",
        "_out",
        "_out_size",
        "body_check",
        "client",
        "deadline",
        "eof",
        "h11",
        "h11_engaged",
        "head_started",
        "idle_since",
        "inbuf",
        "inbuf_scanned",
        "last_active",
        "linger",
        "lock",
        "parked",
        "requests",
        "sock",
        "turn_started",
    )

    def __init__(
        self, sock: socket.socket, client: tuple[str, int], *, max_head_size: int = 32 * 1024
    ) -> None:
        self.sock = sock
        self.client = client
        self._max_head_size = max_head_size
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size)
        #: True while h11 holds the input; otherwise bytes gather in ``inbuf`` and h11 is idle
        #: with nothing buffered, exactly as between two requests.
        self.h11_engaged = False
        self.inbuf = bytearray()
        #: No head ends in ``inbuf[:inbuf_scanned]``: a head trickling in is searched once.
        self.inbuf_scanned = 0
        #: The client has closed its side (seen while ``inbuf`` collects the input).
        self.eof = False
        self._out: list[bytes] = []
        self._out_size = 0
        #: ``time.monotonic()`` of the last bytes received; drives the idle timeout.
        self.last_active = time.monotonic()
        #: Requests answered on this connection so far.
        self.requests = 0
        #: ``time.monotonic()`` when the last request was answered (or the connection opened):
        #: the keep-alive timeout runs from here, so empty lines sent since do not extend it.
        self.idle_since = self.last_active
        #: While parked: when the selector gives up on it (idle or head timeout).
        self.deadline = self.last_active
        #: ``time.monotonic()`` of the first byte of a request head still incomplete, else None.
        self.head_started: float | None = None
        #: Drain the client's unread input before closing (set after refusing a request).
        self.linger = False
        #: True while the poller owns the connection (waiting for bytes); guarded by ``lock``,
        #: which makes the hand-over between a worker and the selector thread atomic.
        self.parked = False
        self.lock = threading.Lock()
        #: ``time.monotonic()`` when a worker last took the connection (to spot stuck workers).
        self.turn_started = 0.0
        #: The framing check of a chunked request body being received (see _chunked.py).
        self.body_check: ChunkedBodyCheck | None = None

    def set_timeouts(self, seconds: float) -> None:
        """Kernel-side send and receive timeouts on a blocking socket.

        Python's own socket timeouts cost a ``poll`` before every ``recv`` and ``send``; these
        cost nothing per call. A timed-out call fails with ``EAGAIN``, which :meth:`receive` and
        :meth:`send_file` report as ``TimeoutError``.
        """
        whole = int(seconds)
        value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- receiving ------------------------------------------------------------------------------

    def receive(self, *, wait: bool = True) -> int:
        """Read what the socket has into ``inbuf`` or h11; 0 means end of stream.

        With ``wait`` it waits up to the socket's timeout and raises ``TimeoutError`` when
        nothing came; without, it raises ``BlockingIOError`` when nothing is there. ``OSError``
        when the peer reset.
        """
        self.flush()
        try:
            data = self.sock.recv(RECV_SIZE, 0 if wait else socket.MSG_DONTWAIT)
        except BlockingIOError:
            if wait:
                raise TimeoutError("no data within the socket timeout") from None
            raise
        if self.h11_engaged:
            if self.body_check is not None:  # framing hook: h11 reads only checked chunk lines
                self.body_check = feed_body_check(self.body_check, data)
            self.h11.receive_data(data)
        elif data:
            self.inbuf += data
        else:
            self.eof = True
        if data:
            self.last_active = time.monotonic()
        return len(data)

    def engage_h11(self) -> None:
        """Hand everything received so far (and an end of stream) to h11."""
        if self.h11_engaged:
            return
        self.h11_engaged = True
        if self.inbuf:
            self.h11.receive_data(bytes(self.inbuf))
            self.inbuf.clear()
        self.inbuf_scanned = 0
        if self.eof:
            self.h11.receive_data(b"")

    def release_h11(self) -> None:
        """Between requests (h11 idle on both sides), go back to plain mode: whatever h11 holds
        of what follows returns to ``inbuf``, for the fast path or for h11 again.

        h11 is replaced by a fresh one when it holds anything: between requests the two are
        equivalent, and a fresh one keeps the rule that h11 is empty in plain mode.
        """
        if not (
            self.h11_engaged and self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE
        ):
            return
        data, closed = self.h11.trailing_data
        if data or closed:
            self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head_size)
            self.inbuf += data
            self.eof = self.eof or closed
        self.inbuf_scanned = 0
        self.h11_engaged = False

    def has_input(self) -> bool:
        """True if part of a request has been received and not yet answered."""
        if self.h11_engaged:
            return bool(self.h11.trailing_data[0])
        return bool(self.inbuf)

    def next_event(self) -> Any:
        return self.h11.next_event()

    # -- sending --------------------------------------------------------------------------------

    def write(self, data: bytes | None) -> None:
        """Queue bytes framed elsewhere (the fast path); they leave with the next flush."""
        if data:
            self._out.append(data)
            self._out_size += len(data)
            if self._out_size >= FLUSH_THRESHOLD:
                self.flush()

    def send(self, event: h11.Event) -> None:
        """Frame ``event`` into the output buffer."""
        self.write(self.h11.send(event))

    def send_file(self, file: Any, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``file`` from ``offset`` as body data, zero-copy."""
        placeholder = cast(bytes, _FileSlice(file, offset, count))
        pieces = self.h11.send_with_data_passthrough(h11.Data(data=placeholder))
        for piece in pieces or ():
            if isinstance(piece, _FileSlice):
                self.flush()
                self._sendfile(piece)
            else:
                self.write(piece)

    def write_file(self, file: Any, offset: int, count: int) -> None:
        """Send ``count`` bytes of ``file`` from ``offset``, zero-copy, after what is queued."""
        self.flush()
        self._sendfile(_FileSlice(file, offset, count))

    def _sendfile(self, piece: _FileSlice) -> None:
        # os.sendfile directly: socket.sendfile builds and polls a selector on every call.
        out_fd, in_fd = self.sock.fileno(), piece.file.fileno()
        offset, remaining = piece.offset, piece.count
        while remaining:
            try:
                sent = os.sendfile(out_fd, in_fd, offset, min(remaining, SENDFILE_CHUNK))
            except BlockingIOError:
                raise TimeoutError("the client stopped reading") from None
            if sent == 0:
                raise ConnectionError("file shrank while it was being sent")
            offset += sent
            remaining -= sent

    def send_body(self, chunks: Iterable[bytes]) -> int:
        """Send each chunk as body data; returns the number of bytes."""
        total = 0
        # A body that asks for it (a WSGI response: PEP 3333 forbids delaying any block) goes
        # out chunk by chunk rather than FLUSH_THRESHOLD at a time.
        each = getattr(chunks, "flush_each_chunk", False) is True
        for chunk in chunks:
            if chunk:
                total += len(chunk)
                self.send(h11.Data(data=chunk))
                if each:
                    self.flush()
        return total

    def flush(self) -> None:
        """Write everything buffered with one ``sendall``."""
        if self._out:
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            try:
                self.sock.sendall(data)
            except BlockingIOError:
                # The send timeout expired with part of the data unsent: the stream is broken.
                raise TimeoutError("the client stopped reading") from None

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Flush (best effort) and close, draining a little unread input first if there is any.

        Closing a socket with unread input makes the kernel send a reset, which can destroy the
        response the client has not read yet; half-closing and draining avoids that.
        """
        try:
            self.flush()
            if self.linger or self.h11.their_state in (h11.SEND_BODY, h11.ERROR):
                self._linger()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.sock.close()

    def _linger(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        drained = 0
        while drained < LINGER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sock.settimeout(remaining)
            data = self.sock.recv(RECV_SIZE)
            if not data:
                return
            drained += len(data)
