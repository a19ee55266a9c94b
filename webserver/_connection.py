"""One client connection: its socket, its input, its framing mode, and who owns it.

Rules this module keeps:

* No call here waits for the peer: the socket is non-blocking. :meth:`Connection.receive` takes
  what the kernel holds; :meth:`Connection.flush` writes what the kernel takes and keeps the rest
  (bytes and file slices, in order) for the next try.
* Ownership is one enum, :class:`Owner`, changed only by :meth:`Connection.park` (a worker hands
  the connection to the selector, to wait for the network) and :meth:`Connection.claim` (the
  selector or its sweep takes it back), both under ``lock``. Only the owner touches the socket.
* The input buffer and its scan offset are private; the framing mode (:class:`Mode`) is switched
  by one method, ``_use``. In plain mode h11 is idle and empty and the input gathers in the
  buffer, exactly as between two requests; in h11 mode h11 holds the input until the next request
  boundary, where :meth:`Connection.end_exchange` hands what follows back to plain mode.
* :meth:`Connection.next_request` answers with a request, :class:`Wait` or :class:`Refuse`.
* It frames bytes and nothing else: it knows requests and responses, not files or routes.
"""

from __future__ import annotations

import contextlib
import enum
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import h11
from h11 import Connection as H11Connection
from h11 import Event as H11Event

from ._chunked import ChunkedBodyCheck, feed_body_check
from ._fastpath import PlainRequest, parse_plain_request
from .errors import HTTPError
from .framing import HeadLimits, check_head_prefix, check_request_head, find_head_end

#: Bytes asked of the kernel per ``recv``: large enough for a pipelined burst of small requests.
RECV_SIZE = 64 * 1024
#: Largest piece handed to one ``sendfile`` call (the kernel caps a call near 2 GiB anyway).
SENDFILE_CHUNK = 1 << 30
#: Consecutive queued byte strings are joined into one ``send`` up to this size.
JOIN_SIZE = 256 * 1024
#: After answering with an error, read (and discard) at most this much of what the client still
#: sends before closing, so it sees the response rather than a connection reset (RFC 9112 §9.6).
LINGER_BYTES = 256 * 1024
#: ...and for at most this many seconds (the selector does it; no thread waits).
LINGER_SECONDS = 2.0
#: Over TLS a file is read into memory this much at a time (the kernel cannot encrypt what
#: ``sendfile`` sends): four full TLS records, and what one slow client may hold in memory.
TLS_FILE_CHUNK = 64 * 1024


class Mode(enum.Enum):
    """Who frames the input."""

    PLAIN = "plain"  #: the fast path reads the buffer; h11 is idle and empty
    H11 = "h11"  #: h11 holds the input until the end of the exchange


class Owner(enum.Enum):
    """Who holds the connection, and what it waits for while parked."""

    # Members are singletons: hash by identity, in C, not Enum's Python-level hash of the name
    # (ownership is looked up in sets several times per request).
    __hash__ = object.__hash__

    WORKER = "worker"  #: a thread runs it (a worker, or the selector closing it)
    QUEUED = "queued"  #: the network is ready; waiting in the server's queue for a worker
    HEAD = "head"  #: parked for a request head (idle keep-alive, or a head arriving)
    BODY = "body"  #: parked for more of a request body
    SEND = "send"  #: parked for room in the kernel's send buffer
    LINGER = "linger"  #: answered and half-closed: discarding input until the client closes
    HANDSHAKE = "handshake"  #: TLS handshake in progress, stepped by the selector (_tls.py)


#: The states in which the selector owns the connection.
PARKED = frozenset({Owner.HEAD, Owner.BODY, Owner.SEND, Owner.LINGER, Owner.HANDSHAKE})


@dataclass(frozen=True, slots=True)
class Wait:
    """No complete request head is buffered."""

    #: Part of a head has arrived: the head deadline runs.
    partial: bool
    #: Only empty lines came since the last request: they extend no deadline.
    blank_only: bool = False


@dataclass(frozen=True, slots=True)
class Refuse:
    """The next request is invalid: answer ``status`` and close."""

    status: int
    detail: str


#: Every ``Wait`` there is, built once (one is answered after most requests).
_WAITS = {(p, b): Wait(p, b) for p in (False, True) for b in (False, True)}


class Ended:
    """The client closed its side between requests, or the stream can carry no more."""


ENDED = Ended()


class NotPlain:
    """The next request is not for the fast path (it needs h11, or h11 is to say what is
    wrong with it); asked with ``plain_only``, nothing was consumed and the mode is unchanged."""


NOT_PLAIN = NotPlain()

#: What :meth:`Connection.next_request` answers.
Next = PlainRequest | h11.Request | Wait | Refuse | Ended | NotPlain


class Resource(Protocol):
    """Something a connection holds for an exchange in progress and releases when it closes."""

    def close(self) -> None: ...


class _FileSlice:
    """Part of a file still to send with ``sendfile``; it closes the file once sent."""

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
        "_h11",
        "_inbuf",
        "_max_head_size",
        "_mode",
        "_out",
        "_out_bytes",
        "_out_files",
        "_owner",
        "_plain_head",
        "_scanned",
        "body_check",
        "client",
        "closing",
        "deadline",
        "eof",
        "hard_deadline",
        "head_started",
        "idle_since",
        "incoming",
        "last_active",
        "linger",
        "lingered",
        "lock",
        "outgoing",
        "parked_as",
        "requests",
        "send_progress",
        "send_since",
        "sent_since",
        "sock",
        "turn_started",
    )

    def __init__(
        self, sock: socket.socket, client: tuple[str, int], *, max_head_size: int = 32 * 1024
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.client = client
        self._max_head_size = max_head_size
        #: Built when first needed (see :attr:`h11`): most connections never leave plain mode.
        self._h11: H11Connection | None = None
        self._mode = Mode.PLAIN
        self._inbuf = bytearray()
        #: No head ends in ``_inbuf[:_scanned]``: a head trickling in is searched once.
        self._scanned = 0
        #: Size of the plain request head at the start of ``_inbuf``, once parsed.
        self._plain_head = 0
        #: The client has closed its side (seen while the buffer collects the input).
        self.eof = False
        # A list, not a deque: it rarely holds more than a few items, and an empty deque costs
        # 600 bytes more per connection.
        self._out: list[bytes | memoryview | _FileSlice] = []
        self._out_bytes = 0
        #: File slices in ``_out``.
        self._out_files = 0
        now = time.monotonic()
        #: ``time.monotonic()`` of the last bytes received.
        self.last_active = now
        #: Requests answered on this connection so far.
        self.requests = 0
        #: When the last request was answered (or the connection opened): the keep-alive
        #: timeout runs from here, so empty lines sent since do not extend it.
        self.idle_since = now
        #: ``time.monotonic()`` of the first byte of a request head still incomplete, else None.
        self.head_started: float | None = None
        #: While parked: when the selector gives up on it (the earlier of no progress and too
        #: slow); ``hard_deadline`` is the part that progress does not move.
        self.deadline = now
        self.hard_deadline = float("inf")
        #: When output started waiting for the client to read, bytes sent since, last progress.
        self.send_since = now
        self.sent_since = 0
        self.send_progress = now
        #: Drain the client's unread input before closing (set after refusing a request).
        self.linger = False
        #: Bytes discarded while lingering.
        self.lingered = 0
        #: No request follows: close once the output is sent.
        self.closing = False
        #: The exchange in progress, kept while parked: a body being received, a response being
        #: generated. Released by :meth:`close`.
        self.incoming: Resource | None = None
        self.outgoing: Resource | None = None
        self._owner = Owner.HEAD
        #: The state it was parked in last (what the sweep judges a queued connection by).
        self.parked_as = Owner.HEAD
        self.lock = threading.Lock()
        #: ``time.monotonic()`` when a worker last took the connection (to spot stuck workers).
        self.turn_started = 0.0
        #: The framing check of a chunked request body being received (see _chunked.py).
        self.body_check: ChunkedBodyCheck | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def h11(self) -> H11Connection:
        """The h11 state machine of this connection, built on first use: in plain mode it is
        idle and empty, which a fresh one is too (and a parked connection then saves its 900
        bytes)."""
        machine = self._h11
        if machine is None:
            machine = self._h11 = H11Connection(
                h11.SERVER, max_incomplete_event_size=self._max_head_size
            )
        return machine

    # -- ownership ------------------------------------------------------------------------------

    @property
    def owner(self) -> Owner:
        return self._owner

    def park(
        self, owner: Owner, deadline: float, hard_deadline: float, arm: Callable[[], None]
    ) -> bool:
        """Hand the connection to the selector to wait in state ``owner``; ``arm`` (called under
        the lock, so no event can be seen before the state is set) registers the wait. False,
        and still the caller's, when ``arm`` fails."""
        with self.lock:
            self._owner = self.parked_as = owner
            self.deadline = deadline
            self.hard_deadline = hard_deadline
            try:
                arm()
            except OSError:
                self._owner = Owner.WORKER
                return False
        return True

    def claim(
        self, owner: Owner, among: frozenset[Owner], due: float | None = None
    ) -> Owner | None:
        """Take the connection into state ``owner`` if it is in one of ``among`` (and, with
        ``due``, past its deadline then: the hard one for a queued connection, which has shown
        progress); returns the state it was in, or None when it was not taken."""
        with self.lock:
            previous = self._owner
            if previous not in among:
                return None
            if due is not None:
                limit = self.hard_deadline if previous is Owner.QUEUED else self.deadline
                if limit > due:
                    return None
            self._owner = owner
            return previous

    # -- receiving ------------------------------------------------------------------------------

    def receive(self) -> int:
        """Take what the socket holds; 0 means end of stream. ``BlockingIOError`` when nothing
        is there, ``OSError`` when the peer reset."""
        data = self.sock.recv(RECV_SIZE)
        if self._mode is Mode.H11:
            if self.body_check is not None:  # framing hook: h11 reads only checked chunk lines
                self.body_check = feed_body_check(self.body_check, data)
            self.h11.receive_data(data)
        elif data:
            self._inbuf += data
        else:
            self.eof = True
        if data:
            self.last_active = time.monotonic()
        return len(data)

    def has_input(self) -> bool:
        """True if part of a request has been received and not yet answered."""
        if self._mode is Mode.H11:
            return bool(self.h11.trailing_data[0])
        return bool(self._inbuf)

    def next_request(self, limits: HeadLimits, *, plain_only: bool = False) -> Next:
        """The next request buffered: a plain one (answered before the next call, see
        :meth:`take_plain_head`), one h11 parsed (its body follows from h11), or why not.
        With ``plain_only``, :data:`NOT_PLAIN` instead of anything h11 would have to read."""
        if self._mode is Mode.PLAIN:
            found = self._next_plain(limits)
            if found is not None:
                return found
            if plain_only:
                if self.eof and not self._inbuf:
                    return ENDED  # what h11 says of a stream closed between requests
                return NOT_PLAIN
            self._use(Mode.H11)
        elif plain_only:
            return NOT_PLAIN
        return self._next_h11(limits)

    def _next_plain(self, limits: HeadLimits) -> Next | None:
        """A plain request or a wait; None (nothing consumed) when h11 is to read what is
        buffered."""
        inbuf = self._inbuf
        if not inbuf and not self.eof:
            # Nothing buffered, as after most answers: the end of the scan below, at once.
            self._scanned = 0
            return self._waiting(partial=False, blank_only=False)
        blank = False
        while inbuf.startswith(b"\r\n"):
            # RFC 9112 §2.2: ignore empty lines before a request line (some clients send one
            # after a POST body). They extend no deadline, so a trickle of them holds nothing.
            del inbuf[:2]
            blank = True
            self._scanned = 0
        if inbuf and inbuf[0] < 0x21 and inbuf != b"\r":
            # h11 refuses at once what cannot start a request line (a TLS handshake sent to a
            # plain-HTTP port), without waiting for a whole head.
            return None
        end = find_head_end(inbuf, self._scanned)
        if end >= 0:
            plain = parse_plain_request(bytes(inbuf[:end]), limits)
            if plain is None:
                return None
            self._plain_head = end
            self.head_started = None
            return plain
        if self.eof or len(inbuf) > limits.max_head_size:
            return None  # h11 and the strict checks say what is wrong, if anything
        if inbuf and _head_prefix_refused(inbuf, self._scanned, limits):
            return None  # framing hook: h11 mode answers it (_check_pending_head)
        self._scanned = max(0, len(inbuf) - 2)
        lone_cr = inbuf == b"\r"  # perhaps the start of another empty line
        return self._waiting(partial=bool(inbuf) and not lone_cr, blank_only=blank or lone_cr)

    def _next_h11(self, limits: HeadLimits) -> Next:
        partial = False
        if self.h11.their_state is h11.IDLE:
            pending = self.h11.trailing_data[0]
            if pending:
                try:
                    partial = _check_pending_head(pending, limits)
                except HTTPError as exc:
                    self.linger = True
                    return Refuse(exc.status, exc.detail)
        try:
            event = self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            return Refuse(exc.error_status_hint, str(exc))
        if event is h11.NEED_DATA:
            if not self.has_input():
                self.end_exchange()  # (with a partial head held, h11 keeps it)
                if self._mode is Mode.PLAIN:
                    return self._waiting(partial=False, blank_only=False)
            return self._waiting(partial=partial, blank_only=False)
        if type(event) is h11.Request:
            self.head_started = None
            return event
        return ENDED  # ConnectionClosed, or PAUSED after a close-delimited exchange

    def _waiting(self, *, partial: bool, blank_only: bool) -> Wait:
        if not partial:
            self.head_started = None
        elif self.head_started is None:
            # The head deadline runs from the head's first byte and is never extended.
            self.head_started = self.last_active
        return _WAITS[partial, blank_only]

    def take_plain_head(self) -> None:
        """The plain request just parsed is answered by the fast path: drop its head."""
        del self._inbuf[: self._plain_head]
        self._scanned = 0

    def hand_plain_to_h11(self) -> None:
        """Let h11 parse the plain request just parsed, so it can frame the response."""
        self._use(Mode.H11)
        event = self.h11.next_event()
        if type(event) is not h11.Request or type(self.h11.next_event()) is not h11.EndOfMessage:
            raise RuntimeError(f"h11 disagrees with the fast path on a request head: {event!r}")

    @property
    def mode(self) -> Mode:
        return self._mode

    def _use(self, mode: Mode) -> None:
        """The one switch of framing mode. To h11: everything received so far (and an end of
        stream) goes to h11. To plain: whatever h11 holds of what follows returns to the buffer;
        h11 is replaced by a fresh one when it holds anything (between requests the two are
        equivalent), so h11 is empty in plain mode."""
        if mode is self._mode:
            return
        self._mode = mode
        self._scanned = 0
        if mode is Mode.H11:
            if self._inbuf:
                self.h11.receive_data(bytes(self._inbuf))
                self._inbuf.clear()
            if self.eof:
                self.h11.receive_data(b"")
            return
        data, closed = self.h11.trailing_data
        if data or closed:
            self._h11 = None  # a fresh one when next needed
            self._inbuf += data
            self.eof = self.eof or closed

    def end_exchange(self) -> bool:
        """After a response in h11 mode: start the next cycle and go back to plain mode; False
        when the connection cannot carry another request."""
        if self._mode is Mode.PLAIN:
            return True
        ours, theirs = self.h11.our_state, self.h11.their_state
        if ours is h11.DONE and theirs is h11.DONE:
            self.h11.start_next_cycle()
        elif not (ours is h11.IDLE and theirs is h11.IDLE):
            return False
        self._use(Mode.PLAIN)
        return True

    def needs_linger(self) -> bool:
        """True when the client may still be sending what we will never read."""
        machine = self._h11
        return self.linger or (
            machine is not None and machine.their_state in (h11.SEND_BODY, h11.ERROR)
        )

    # -- sending --------------------------------------------------------------------------------

    def write(self, data: bytes | None) -> None:
        """Queue bytes; they leave with the next :meth:`flush`."""
        if data:
            if not self._out:
                self._started_waiting()
            self._out.append(data)
            self._out_bytes += len(data)

    def send(self, event: H11Event) -> None:
        """Frame ``event`` with h11 into the output queue."""
        self.write(self.h11.send(event))

    def send_file(self, file: Any, offset: int, count: int) -> None:
        """Queue ``count`` bytes of ``file`` from ``offset`` as h11 body data, sent zero-copy;
        the connection closes the file once sent (or when it closes)."""
        placeholder = cast(bytes, _FileSlice(file, offset, count))
        for piece in self.h11.send_with_data_passthrough(h11.Data(data=placeholder)) or ():
            if isinstance(piece, _FileSlice):
                self.write_file(piece.file, piece.offset, piece.count)
            else:
                self.write(piece)

    def write_file(self, file: Any, offset: int, count: int) -> None:
        """Queue ``count`` bytes of ``file`` from ``offset`` (framed elsewhere), zero-copy."""
        if not self._out:
            self._started_waiting()
        self._out.append(_FileSlice(file, offset, count))
        self._out_files += 1

    @property
    def queued(self) -> int:
        """Bytes queued in memory (file slices not counted: they are not in memory)."""
        return self._out_bytes

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    @property
    def holds_file(self) -> bool:
        return self._out_files > 0

    def _started_waiting(self) -> None:
        self.send_since = self.send_progress = time.monotonic()
        self.sent_since = 0

    def flush(self) -> bool:
        """Write what the kernel takes now; True when nothing is left queued."""
        out = self._out
        while out:
            item = out[0]
            if isinstance(item, _FileSlice):
                if isinstance(self.sock, ssl.SSLSocket):
                    self._read_slice(item)
                    continue
                if not self._sendfile(item):
                    return False
                del out[0]
                self._out_files -= 1
                continue
            if len(out) > 1 and not isinstance(out[1], _FileSlice) and len(item) < JOIN_SIZE:
                item = self._join_head()
            try:
                sent = self.sock.send(item)
            except (BlockingIOError, InterruptedError):
                return False
            self._progress(sent)
            self._out_bytes -= sent
            if sent < len(item):
                out[0] = memoryview(item)[sent:]
                return False
            del out[0]
        return True

    def _join_head(self) -> bytes:
        """Join the byte strings at the front of the queue (up to ``JOIN_SIZE``) into one."""
        out = self._out
        count = size = 0
        while count < len(out) and not isinstance(out[count], _FileSlice) and size < JOIN_SIZE:
            size += len(out[count])
            count += 1
        joined = b"".join(cast(list[bytes | memoryview], out[:count]))
        out[:count] = [joined]
        return joined

    def _progress(self, sent: int) -> None:
        self.sent_since += sent
        self.send_progress = time.monotonic()

    def _sendfile(self, piece: _FileSlice) -> bool:
        # os.sendfile directly: socket.sendfile builds and polls a selector on every call.
        out_fd, in_fd = self.sock.fileno(), piece.file.fileno()
        while piece.count:
            try:
                sent = os.sendfile(out_fd, in_fd, piece.offset, min(piece.count, SENDFILE_CHUNK))
            except (BlockingIOError, InterruptedError):
                return False
            if sent == 0:
                raise ConnectionError("file shrank while it was being sent")
            piece.offset += sent
            piece.count -= sent
            self._progress(sent)
        piece.file.close()
        return True

    def _read_slice(self, piece: _FileSlice) -> None:
        """Put the next bytes of the file slice at the front of the queue before it (over TLS,
        which encrypts in user space); a send refused is then retried with the same bytes."""
        data = os.pread(piece.file.fileno(), min(piece.count, TLS_FILE_CHUNK), piece.offset)
        if not data:
            raise ConnectionError("file shrank while it was being sent")
        piece.offset += len(data)
        piece.count -= len(data)
        if not piece.count:
            del self._out[0]
            self._out_files -= 1
            piece.file.close()
        self._out.insert(0, data)
        self._out_bytes += len(data)

    # -- closing --------------------------------------------------------------------------------

    def start_linger(self) -> None:
        """Stop sending (the response is out) and start discarding what the client sends."""
        self.sock.shutdown(socket.SHUT_WR)

    def drain(self) -> bool:
        """Discard what the client sent while lingering; True when done (it closed, or it sent
        too much)."""
        try:
            while self.lingered < LINGER_BYTES:
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    return True
                self.lingered += len(data)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        return True

    def close(self) -> None:
        """Release the socket and whatever the exchange in progress holds (spooled body, open
        files, a response generator); unsent output is dropped."""
        for resource in (self.incoming, self.outgoing):
            if resource is not None:
                with contextlib.suppress(Exception):
                    resource.close()
        self.incoming = self.outgoing = None
        while self._out:
            item = self._out.pop(0)
            if isinstance(item, _FileSlice):
                with contextlib.suppress(OSError):
                    item.file.close()
        self._out_bytes = self._out_files = 0
        with contextlib.suppress(OSError):
            self.sock.close()


def _check_pending_head(pending: bytes, limits: HeadLimits) -> bool:
    """Check the next request head in ``pending``; True if it has not fully arrived yet."""
    end = find_head_end(pending)
    if end < 0:
        check_head_prefix(pending, 0, limits)  # framing hook: refused at its first bad byte
        return True
    check_request_head(pending[:end], limits)
    return False


def _head_prefix_refused(inbuf: bytearray, checked: int, limits: HeadLimits) -> bool:
    """True if the head arriving in ``inbuf`` is already invalid (framing hook)."""
    try:
        check_head_prefix(inbuf, checked, limits)
    except HTTPError:
        return True
    return False
