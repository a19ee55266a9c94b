"""The server: a listening socket, one selector thread, and a pool of worker threads.

Call flow::

    serve_forever()                         the selector thread (the caller's)
      ├── accept()  → Connection            new sockets are parked at once (epoll, one-shot)
      ├── readable parked connection        the kernel disarms it; into the ready queue
      │     (a body trickling in is received here, and re-armed until a worker has work;
      │      with no worker busy, plain requests answered from memory are answered here)
      │     _admit()                        pool.submit(_work_loop) while few loops run
      │     _work_loop()                    a worker thread, taking ready connections in turn
      │       └── exchange.serve_ready()    answer every buffered request, in order
      │             ├── PARK  → the worker re-arms it in epoll itself
      │             └── CLOSE → conn.close()
      ├── sweep, a few times a second       close parked connections past their deadline
      └── wake-up byte                      only to notice shutdown()

    shutdown()   (any thread, or a signal handler)
      → stop accepting, close parked connections, let in-flight requests finish within the grace
        period (their responses say ``Connection: close``), then cut off what remains.

Rules: an idle connection holds no thread; only the thread that owns a connection at a moment
touches its socket (the selector while parked, one worker while served), and the hand-over
between them happens under the connection's lock; the selector thread never blocks on a client.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import logging
import os
import resource
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType

import h11

from ._connection import LINGER_SECONDS, PARKED, Connection, Mode, Owner
from ._errorlog import bound_error_log
from ._exchange import (
    NeedsWorker,
    Outcome,
    Turn,
    head_limits,
    receive_parked_body,
    serve_ready,
)
from ._tls import Step, answer_plain_http, build_context, handshake_step, wrap
from ._writing import InvalidResponse, make_reply, write_reply
from .config import ServerConfig, TCPAddress, UnixAddress
from .errors import HTTPError
from .handler import Handler
from .paths import decode_path, split_target
from .proxy import Health
from .request import Request
from .response import Response
from .router import Router
from .static import StaticFiles
from .uploads import Uploads

error_log = logging.getLogger("webserver.error")

#: New connections taken per wake-up of the selector, so a flood cannot starve parked clients.
ACCEPT_BATCH = 64
#: With a listening socket shared by several processes, each takes few at a time, so that the
#: connections of a burst spread over the processes instead of landing on the first one awake.
SHARED_ACCEPT_BATCH = 4
#: Worker loops that run at once while none is stuck (see ``Server._admit``); measured on
#: 2 cores: 1 serves small requests fastest.
RUNNING_WORKERS = 1
#: A worker busy with one connection for longer than this is taken to be waiting on something
#: (a slow client, a slow handler), and another worker may start.
STUCK_AFTER = 0.01
#: Seconds a worker loop with nothing to do waits for the next ready connection before it
#: returns its thread to the pool: under load the next one comes within microseconds, and the
#: same thread takes it.
LINGER_FOR_WORK = 0.05
#: Seconds between checks of parked connections' deadlines (idle and head timeouts).
SWEEP_INTERVAL = 0.5


#: ``request.client`` of a connection accepted on a Unix socket, which has no peer address
#: (logged as nginx does).
UNIX_CLIENT = ("unix:", 0)

#: Parked connections a graceful stop closes at once: between requests, or not yet speaking HTTP.
_IDLE = frozenset({Owner.HEAD, Owner.HANDSHAKE})

#: Where a turn's outcome parks its connection.
_PARKED_AS = {Outcome.HEAD: Owner.HEAD, Outcome.BODY: Owner.BODY, Outcome.SEND: Owner.SEND}

#: The signals a service manager or a terminal sends to ask for a stop.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Descriptors kept for everything but client sockets: the listener, epoll, log files, files
#: being sent and spooled bodies.
RESERVED_DESCRIPTORS = 64


def raise_open_files_limit(connections: int) -> str | None:
    """Raise this process's soft limit on open files to its hard limit (as nginx's
    ``worker_rlimit_nofile``): each connection costs a descriptor, and the usual soft limit of
    1,024 would refuse clients long before ``max_connections``. Returns a sentence when even the
    hard limit is below what ``connections`` need, else None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY or connections + RESERVED_DESCRIPTORS <= soft:
        return None
    return (
        f"warning: the open-files limit is {soft} (raised to the hard limit), below the"
        f" {connections} connections allowed; past about {max(soft - RESERVED_DESCRIPTORS, 1)}"
        f" new clients wait until others close (raise it with ulimit -Hn)"
    )


def format_url(host: str, port: int, scheme: str = "http") -> str:
    """``http://host:port/`` (or ``https``), with an IPv6 host in brackets."""
    return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"


def listener_url(listener: socket.socket, scheme: str = "http") -> str:
    """Where clients reach ``listener``: ``http://host:port/`` (``https`` with TLS), or
    ``unix:PATH``."""
    if listener.family == socket.AF_UNIX:
        return f"unix:{listener.getsockname()}"
    host, port = listener.getsockname()[:2]
    return format_url(host, port, scheme)


#: The first descriptor systemd passes (sd_listen_fds(3)).
_SD_LISTEN_FDS_START = 3


def systemd_listeners() -> list[socket.socket]:
    """The sockets systemd passed by socket activation (``LISTEN_FDS`` descriptors from 3,
    meant for this process when ``LISTEN_PID`` is its pid), else none.

    The variables are removed once read, so a child process does not take the sockets for its
    own (as ``sd_listen_fds(unset_environment=1)``).
    """
    pid, count = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    if not (pid.isdigit() and int(pid) == os.getpid() and count.isdigit()):
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    listeners = []
    for fd in range(_SD_LISTEN_FDS_START, _SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        listener = socket.socket(fileno=fd)
        listener.setblocking(False)
        listeners.append(listener)
    return listeners


def open_listener(config: ServerConfig) -> socket.socket:
    """A non-blocking socket bound and listening on ``config.host:port`` (checks the root
    first); :func:`open_listeners` opens every address of ``config``."""
    config.check_root()
    return _open_tcp(TCPAddress(config.host, config.port), config.backlog)


def open_listeners(config: ServerConfig, *, reuse_port: bool = False) -> list[socket.socket]:
    """Non-blocking sockets listening on every address of ``config``, in order (checks the
    root first). All or none: a failure closes those already open. ``reuse_port`` lets the TCP
    ones get siblings on the same address (``SO_REUSEPORT``), one per worker process: see
    :mod:`webserver.workers`."""
    config.check_root()
    listeners: list[socket.socket] = []
    try:
        for address in config.addresses:
            if isinstance(address, UnixAddress):
                listeners.append(_open_unix(address.path, config.unix_mode, config.backlog))
            else:
                listeners.append(_open_tcp(address, config.backlog, reuse_port=reuse_port))
    except BaseException:
        close_listeners(listeners)
        raise
    return listeners


def unix_path(listener: socket.socket) -> Path | None:
    """The file of a Unix listening socket, else None."""
    if listener.family != socket.AF_UNIX:
        return None
    name = listener.getsockname()
    return Path(name) if isinstance(name, str) and name else None


def close_listeners(listeners: list[socket.socket]) -> None:
    """Close ``listeners``, removing the files of the Unix sockets among them."""
    for listener in listeners:
        path = unix_path(listener) if listener.fileno() >= 0 else None
        listener.close()
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()


def _open_tcp(address: TCPAddress, backlog: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((address.host, address.port))
        listener.listen(backlog)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


def _open_unix(path: Path, mode: int | None, backlog: int) -> socket.socket:
    """Listen on a Unix socket at ``path``; a stale socket file left by a crash is replaced,
    a live one (something answers on it) is in use, and any other file is never removed."""
    if path.is_socket():
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink()
            except OSError:
                pass
            else:
                raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE), str(path))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        try:
            if mode is not None:
                os.chmod(path, mode)
            listener.listen(backlog)
        except BaseException:
            path.unlink()
            raise
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


class _Poller:
    """Readiness of parked connections (Linux epoll, one-shot).

    A connection is armed once per park, for reading or (waiting to send) for writing: when the
    network is ready the kernel reports it once and disarms it, the selector thread queues it
    for a worker, and the worker re-arms it itself when it parks the connection again -- no
    hand-back queue, no wake-up of the selector thread. ``epoll_ctl`` is safe from any thread.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        #: Every open connection by descriptor, parked or busy; written by the selector thread
        #: (add) and by whichever thread closes a connection (forget).
        self.connections: dict[int, Connection] = {}

    def watch(self, sock: socket.socket, *, exclusive: bool = False) -> None:
        flags = select.EPOLLIN | (select.EPOLLEXCLUSIVE if exclusive else 0)
        self._epoll.register(sock.fileno(), flags)

    def unwatch(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(sock.fileno())

    def add(self, conn: Connection) -> None:
        fd = conn.sock.fileno()
        self.connections[fd] = conn
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLONESHOT)

    def rearm(self, conn: Connection, *, send: bool = False) -> None:
        flags = select.EPOLLOUT if send else select.EPOLLIN
        self._epoll.modify(conn.sock.fileno(), flags | select.EPOLLONESHOT)

    def forget(self, conn: Connection) -> None:
        """Stop watching ``conn``; call before closing its socket (descriptors are reused)."""
        fd = conn.sock.fileno()
        if fd < 0:
            return
        if self.connections.get(fd) is conn:
            del self.connections[fd]
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)

    def wait(self, timeout: float) -> list[int]:
        return [fd for fd, _ in self._epoll.poll(timeout)]

    def close(self) -> None:
        self._epoll.close()


def answer_overload(conn: Connection, config: ServerConfig, status: int, detail: str) -> None:
    """Answer a connection the server will not serve (503 overload, 408 too slow), then close it.

    Runs on the selector thread and never waits: whatever does not fit in the kernel's buffer is
    dropped; the client learns why through the status and ``Retry-After``.
    """
    headers = [("Retry-After", "1")] if status == 503 else []
    if conn.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
        response = Response.error(status, detail, headers=headers)
        with contextlib.suppress(OSError, h11.LocalProtocolError, InvalidResponse):
            reply = make_reply(response, config.server_name, close=True, head_only=False)
            write_reply(conn, reply, lambda sent: None)
            conn.flush()
    conn.close()


class Server:
    """An HTTP/1.0 and HTTP/1.1 server; see the module docstring for how it runs.

    ``Server(config)`` or ``Server(root="www", port=0, ...)`` (keywords of
    :class:`~webserver.ServerConfig`). The built-in :class:`~webserver.StaticFiles` and
    :class:`~webserver.Uploads` handlers answer under ``/`` unless ``default_routes=False`` (no
    ``Uploads`` with ``read_only``);
    :meth:`route` adds more, and a more specific route wins.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        default_routes: bool = True,
        listener: socket.socket | Sequence[socket.socket] | None = None,
        **settings: object,
    ) -> None:
        if config is None:
            config = ServerConfig(**settings)  # type: ignore[arg-type]
        elif settings:
            raise TypeError("pass either a ServerConfig or keyword settings, not both")
        self.config = config
        self._limits = head_limits(config)
        #: The SSL context when the server speaks TLS (certificate and key read once, here).
        self._tls = build_context(config)
        self.router = Router()
        #: The listening sockets, by descriptor; empty before listen() and after the stop.
        self._listeners: dict[int, socket.socket] = {}
        self._address: tuple[str, int] | None = None
        self._urls: list[str] = []
        #: Listening sockets handed in are shared with other processes (see workers.py), and
        #: their owner removes their files.
        self._shared_listener = listener is not None
        self._accept_batch = SHARED_ACCEPT_BATCH if self._shared_listener else ACCEPT_BATCH
        if listener is not None:
            self._adopt([listener] if isinstance(listener, socket.socket) else list(listener))
        #: Connections accepted and not yet closed; changed under ``_busy_lock``.
        self._open = 0
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._poller = _Poller()  # replaced by a live one in serve_forever
        #: Connections the network has made ready, waiting for a worker (the bounded work queue).
        self._ready: collections.deque[Connection] = collections.deque()
        #: Connections a worker is serving right now.
        self._serving: set[Connection] = set()
        #: Worker loops submitted to the pool and not yet returned (``_lingering`` of them wait
        #: for a connection to become ready).
        self._running = 0
        self._lingering = 0
        self._busy_lock = threading.Lock()
        #: Wakes a lingering worker loop: a connection is ready, or the loops are to return.
        self._work_ready = threading.Condition(self._busy_lock)
        self._retire = False
        #: The selector answers small files from memory itself (see ``_answer_here``); set
        #: when serving starts (``_may_answer_here``).
        self._inline = False
        #: The serving thread started by ``with server:``, and what made it fail.
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        if config.health is not None:
            self.route(config.health, Health)
        if default_routes:
            self.route("/", StaticFiles, prefix=True)
            if not config.read_only:
                self.route("/", Uploads, prefix=True)

    # -- set-up ---------------------------------------------------------------------------------

    def route(self, path: str, handler: type[Handler] | Handler, *, prefix: bool = False) -> None:
        """Serve ``path`` (and, with ``prefix``, everything below it) with ``handler``.

        Given a class, the server builds one instance with ``handler.from_config(config)``.
        """
        if isinstance(handler, type):
            handler = handler.from_config(self.config)
        self.router.add(path, handler, prefix=prefix)

    def listen(self) -> tuple[str, int]:
        """Bind and listen on every address (once); returns the first, with the real port when
        ``port`` was 0 (for a Unix socket: its path and 0).

        The kernel queues connections from this moment, so a caller may connect as soon as this
        returns, before :meth:`serve_forever` runs. A server that has stopped does not listen
        again: build a new one.
        """
        if self._address is None:
            self._adopt(open_listeners(self.config))
        assert self._address is not None
        return self._address

    def _adopt(self, listeners: list[socket.socket]) -> None:
        if not listeners:
            raise ValueError("a server needs at least one listening socket")
        for listener in listeners:
            listener.setblocking(False)
            self._listeners[listener.fileno()] = listener
        self._urls = [listener_url(listener, self.config.scheme) for listener in listeners]
        first = listeners[0].getsockname()
        self._address = (first, 0) if isinstance(first, str) else (first[0], first[1])

    @property
    def url(self) -> str:
        """``http://host:port/`` of the first listening socket (``https`` with TLS, IPv6 hosts
        in brackets), or ``unix:PATH``."""
        self.listen()
        return self._urls[0]

    @property
    def urls(self) -> list[str]:
        """Every address the server listens on, as :attr:`url` writes it."""
        self.listen()
        return list(self._urls)

    def spool_folder(self, method: str, target: str) -> str | None:
        """Where the body of a request for ``target`` is spooled: the folder the handler that
        will answer it asks for (see :meth:`Handler.spool_folder`), else None."""
        try:
            found = self.router.match(decode_path(split_target(target)[0]))
        except HTTPError:
            return None
        if found is None:
            return None
        for handler in found[0]:
            if handler.method(method) is not None:
                return handler.spool_folder()
        return None

    def app(self, request: Request) -> Response:
        """Answer one request; the router by default. Override to wrap every request."""
        return self.router.dispatch(request)

    # -- running --------------------------------------------------------------------------------

    def serve_forever(self, *, handle_signals: bool = True) -> None:
        """Serve until :meth:`shutdown`; returns after the graceful stop.

        On the main thread, SIGINT (Ctrl-C) and SIGTERM start the graceful stop instead of a
        traceback or exit 143, as a service manager expects; the previous handlers are restored
        on return. ``handle_signals=False`` leaves signals to the caller.
        """
        with self._stop_on_signals(handle_signals):
            self._serve()

    @contextlib.contextmanager
    def _stop_on_signals(self, wanted: bool) -> Iterator[None]:
        """Route SIGINT and SIGTERM to :meth:`shutdown` for the duration (main thread only:
        Python runs signal handlers there, and refuses to install them elsewhere)."""
        if not wanted or threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            self.shutdown()

        previous = {signum: signal.signal(signum, stop) for signum in _STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def __enter__(self) -> Server:
        """Listen, then serve in a background thread until the ``with`` block ends."""
        self.listen()
        self._thread = threading.Thread(
            target=self._serve_in_thread, name="webserver-selector", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop gracefully and wait for the serving thread; re-raise what made it fail."""
        self.shutdown()
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _serve_in_thread(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # reported by __exit__ on the caller's thread
            self._failure = exc

    def _serve(self) -> None:
        self.listen()
        listeners = list(self._listeners.values())
        if not listeners:
            raise RuntimeError("this server has stopped; build a new one to serve again")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        if self._stopping.is_set():  # shutdown() came before we had a wake-up socket
            self._wake()
        pool = ThreadPoolExecutor(self.config.threads, thread_name_prefix="webserver-worker")
        poller = self._poller = _Poller()
        self._inline = self._may_answer_here()
        # Every entry bounded and repeats counted while we serve: a client must not fill a disk.
        release_error_log = bound_error_log(error_log)
        try:
            # A socket shared with other processes wakes one of them per connection, not all.
            for listener in listeners:
                poller.watch(listener, exclusive=self._shared_listener)
            poller.watch(self._wake_r)
            try:
                self._select_loop(poller, pool)
            finally:
                self._drain(poller, pool)
        finally:
            poller.close()
            release_error_log()

    def shutdown(self) -> None:
        """Ask :meth:`serve_forever` to stop; safe from any thread and from signal handlers."""
        self._stopping.set()
        self._wake()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until :meth:`serve_forever` has finished its graceful stop."""
        return self._stopped.wait(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _wake(self) -> None:
        wake_w = self._wake_w
        if wake_w is not None:
            with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
                wake_w.send(b"\0")

    def _select_loop(self, poller: _Poller, pool: ThreadPoolExecutor) -> None:
        config = self.config
        sweep_every = min(SWEEP_INTERVAL, config.keep_alive_timeout / 2, config.header_timeout / 2)
        sweep_every = min(sweep_every, config.body_timeout / 2)
        next_sweep = time.monotonic() + sweep_every
        accepting = True
        while not self._stopping.is_set():
            timeout = (
                max(0.0, next_sweep - time.monotonic())
                if poller.connections or not accepting
                else -1
            )
            if not self._poll_once(poller, pool, timeout, self._listeners):
                # Out of descriptors: stop listening for a sweep, rather than spin.
                for listener in self._listeners.values():
                    poller.unwatch(listener)
                accepting = False
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + sweep_every
                if not accepting:
                    for listener in self._listeners.values():
                        poller.watch(listener, exclusive=self._shared_listener)
                    accepting = True

    def _poll_once(
        self,
        poller: _Poller,
        pool: ThreadPoolExecutor,
        timeout: float,
        listeners: dict[int, socket.socket],
    ) -> bool:
        """Wait for events once and act on them; False when accepting ran out of descriptors."""
        assert self._wake_r is not None
        wake_fd = self._wake_r.fileno()
        if self._ready:  # look again soon: a worker may get stuck and need relief
            timeout = STUCK_AFTER if timeout < 0 else min(timeout, STUCK_AFTER)
        accepted = True
        for fd in poller.wait(timeout):
            listener = listeners.get(fd)
            if listener is not None:
                accepted = self._accept(poller, listener) and accepted
            elif fd == wake_fd:
                with contextlib.suppress(BlockingIOError):
                    while self._wake_r.recv(4096):
                        pass
            else:
                conn = poller.connections.get(fd)
                if conn is not None:
                    self._ready_event(pool, conn)
        if self._ready:
            self._admit(pool)
        return accepted

    def _ready_event(self, pool: ThreadPoolExecutor, conn: Connection) -> None:
        """The network is ready for a parked connection: queue it for a worker (a lingering one
        is drained here, without a worker)."""
        previous = conn.claim(Owner.QUEUED, PARKED)
        if previous is None:
            return
        if previous is Owner.LINGER:
            if conn.drain() or not conn.park(
                Owner.LINGER, conn.deadline, conn.hard_deadline, lambda: self._poller.rearm(conn)
            ):
                self._close(conn)
            return
        if previous is Owner.BODY:
            # A trickle of body bytes is received here; a worker is woken only for work.
            turn = receive_parked_body(conn, self.config)
            if turn is not None:
                if not conn.park(
                    Owner.BODY, turn.deadline, turn.hard_deadline, lambda: self._poller.rearm(conn)
                ):
                    self._close(conn)
                return
        if previous is Owner.HANDSHAKE:
            if not self._handshake(conn):
                return
            previous = Owner.HEAD
        elif previous is Owner.HEAD and self._answer_here(conn):
            return
        with self._busy_lock:
            # Only a new request can be refused: a body or a response in progress goes on.
            overloaded = previous is Owner.HEAD and len(self._ready) >= self.config.max_queue
            if not overloaded:
                self._ready.append(conn)
        if overloaded:
            self._poller.forget(conn)
            answer_overload(conn, self.config, 503, "the server is overloaded; retry shortly")
            self._forget(conn)
            return
        self._admit(pool)

    def _answer_here(self, conn: Connection) -> bool:
        """Serve a connection parked between requests on the selector thread, when no worker
        loop is busy; False (nothing consumed) when a worker is to carry it.

        Why: handing a request to a worker costs a queue, a lock, a condition's wake-up and a
        GIL hand-over each way, more than answering a small cached file. Measured with wrk on
        1 KiB (docs/performance.md): about a third less server CPU per keep-alive request. Safe
        because such a turn never waits: the socket is non-blocking, it reads once, answers only
        what ``StaticFiles.from_memory`` gives (one ``stat``, no open, no handler code) and at
        most ``INLINE_REQUESTS`` of a pipeline, and parks or hands over the rest. Not while a
        worker runs or waits to: two threads running Python would take the GIL in turns.
        """
        if not (
            self._inline
            and not self._ready
            and self._running == self._lingering
            and conn.mode is Mode.PLAIN
            and conn.incoming is None
            and conn.outgoing is None
            and not conn.has_output
            and not conn.closing
        ):
            return False
        turn = serve_ready(
            conn,
            self._from_memory,
            self.config,
            self._stopping.is_set,
            limits=self._limits,
            inline=True,
        )
        if turn.outcome is Outcome.WORKER:
            return False
        if not self._park(conn, turn):
            self._close(conn)
        return True

    def _may_answer_here(self) -> bool:
        """Whether the selector may answer small files itself: not when a subclass wraps
        ``app`` or the router's ``dispatch`` (their code may wait, and must see every request),
        nor over TLS (OpenSSL may hold decrypted bytes that epoll cannot report, and the
        selector's turn reads only once)."""
        return (
            type(self).app is Server.app
            and type(self.router).dispatch is Router.dispatch
            and self._tls is None
        )

    def _from_memory(self, request: Request) -> Response:
        """The app of the selector's own turns: what the router would answer, when that is
        ``StaticFiles`` answering from memory; ``NeedsWorker`` for anything else."""
        found = self.router.match(request.path)
        if found is not None:
            handlers, route_path = found
            for handler in handlers:
                if handler.method(request.method) is not None:
                    if type(handler) is StaticFiles:
                        request.route_path = route_path
                        response = handler.from_memory(request)
                        if response is not None:
                            return response
                    break
        raise NeedsWorker

    def _handshake(self, conn: Connection) -> bool:
        """Step the TLS handshake of ``conn`` on the selector thread (never waiting: the socket
        is non-blocking) and park it for what it needs next, under the deadline it had since it
        was accepted -- the head deadline, so a slow or silent client is cut like a slow head.
        True when request bytes are already decrypted and a worker should take it now."""
        step = handshake_step(conn.sock)
        if step is Step.REQUEST:
            return True
        if step in (Step.FAILED, Step.PLAIN_HTTP):
            if step is Step.PLAIN_HTTP:
                answer_plain_http(conn.sock)
            self._close(conn)
            return False
        owner = Owner.HEAD if step is Step.DONE else Owner.HANDSHAKE
        rearm = functools.partial(self._poller.rearm, conn, send=step is Step.WRITE)
        if not conn.park(owner, conn.deadline, conn.hard_deadline, rearm):
            self._close(conn)
        return False

    def _admit(self, pool: ThreadPoolExecutor) -> None:
        """Start worker loops for waiting connections, as many as may run Python at once.

        Threads running Python take turns holding the GIL, and every system call hands it to
        another: with many runnable workers, tiny requests spend more time in those hand-overs
        than in HTTP. So only ``RUNNING_WORKERS`` loops run, plus one for each worker stuck in a
        handler for longer than ``STUCK_AFTER`` (no worker waits for the network), up to
        ``threads`` -- a slow handler still cannot hold up the others.
        """
        now = time.monotonic()
        with self._busy_lock:
            if self._lingering:
                # The loop that ran last is still warm: hand it the work, rather than a pool
                # thread picked in turn (a futex wake-up either way, but one thread, not eight
                # taking turns with cold caches, and no future per hand-off).
                self._work_ready.notify()
                return
            start = min(len(self._ready), self._allowed(now) - self._running)
            if start <= 0:
                return
            self._running += start
        for _ in range(start):
            pool.submit(self._work_loop)

    def _accept(self, poller: _Poller, listener: socket.socket) -> bool:
        """Take waiting connections; False when the process is out of descriptors."""
        for _ in range(self._accept_batch):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    error_log.warning("cannot accept connections: %s", exc.strerror)
                    return False
                continue  # the peer reset before we got to it
            if listener.family == socket.AF_UNIX:
                client = UNIX_CLIENT  # a Unix-socket peer has no address of its own
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client = (address[0], address[1])
            if self._tls is not None:
                sock = wrap(self._tls, sock)
            conn = Connection(sock, client, max_head_size=self.config.max_head_size)
            with self._busy_lock:
                full = self._open >= self.config.max_connections
                if not full:
                    self._open += 1
            if full and self._tls is not None:
                conn.close()  # no handshake (its CPU) for a client that gets no service
                continue
            if full:
                answer_overload(conn, self.config, 503, "too many connections; retry shortly")
                continue
            deadline = conn.last_active + self.config.header_timeout
            conn.deadline = conn.hard_deadline = deadline
            if self._tls is None:
                poller.add(conn)
            elif not conn.park(
                Owner.HANDSHAKE, deadline, deadline, functools.partial(poller.add, conn)
            ):
                self._close(conn)
        return True

    def _sweep(self, now: float) -> None:
        """Cut connections past their deadline, parked or queued for a worker: a head or body
        too slow gets 408, a response the client does not read is dropped."""
        for conn in list(self._poller.connections.values()):
            if conn.deadline > now:
                # Read without the lock, to spare a thousand idle connections a lock each per
                # sweep: ``deadline`` is never later than ``hard_deadline``, and a deadline
                # changed meanwhile is judged at the next sweep.
                continue
            previous = conn.claim(Owner.WORKER, PARKED | {Owner.QUEUED}, due=now)
            if previous is None:
                continue
            if previous is Owner.QUEUED:
                with self._busy_lock, contextlib.suppress(ValueError):
                    self._ready.remove(conn)
            self._cut(conn, conn.parked_as)

    def _cut(self, conn: Connection, waiting: Owner) -> None:
        if waiting is Owner.BODY:
            self._poller.forget(conn)
            answer_overload(conn, self.config, 408, "the request body took too long")
            self._forget(conn)
        elif waiting is Owner.HEAD and (
            conn.head_started is not None or (conn.requests == 0 and conn.has_input())
        ):
            self._poller.forget(conn)
            answer_overload(conn, self.config, 408, "the request head took too long")
            self._forget(conn)
        else:
            self._close(conn)

    def _work_loop(self) -> None:
        """Run in a worker: serve waiting connections one after another until none is left."""
        while True:
            with self._busy_lock:
                if (self._ready and self._running > RUNNING_WORKERS and self._over_limit()) or (
                    not self._ready and not self._linger_for_work()
                ):
                    self._running -= 1
                    return
                conn = self._ready.popleft()
                conn.turn_started = time.monotonic()
                self._serving.add(conn)
            if conn.claim(Owner.WORKER, frozenset({Owner.QUEUED})) is not None:
                try:
                    self._work(conn)
                finally:
                    with self._busy_lock:
                        self._serving.discard(conn)
            else:  # the sweep took it meanwhile
                with self._busy_lock:
                    self._serving.discard(conn)

    def _allowed(self, now: float) -> int:
        """Worker loops that may run now (under ``_busy_lock``): see :meth:`_admit`."""
        stuck = sum(1 for c in self._serving if now - c.turn_started > STUCK_AFTER)
        return min(self.config.threads, RUNNING_WORKERS + stuck)

    def _over_limit(self) -> bool:
        """True (under ``_busy_lock``) when more loops run than may: a worker that was stuck
        has finished, and the extra loop started for it returns instead of competing for the
        GIL."""
        return self._running - self._lingering > self._allowed(time.monotonic())

    def _linger_for_work(self) -> bool:
        """Wait (under ``_busy_lock``) up to ``LINGER_FOR_WORK`` for a connection to become
        ready; True when one is. Only one loop lingers at a time; the others return."""
        if self._lingering or self._retire:
            return False
        self._lingering += 1
        try:
            self._work_ready.wait_for(
                lambda: bool(self._ready) or self._retire, timeout=LINGER_FOR_WORK
            )
        finally:
            self._lingering -= 1
        return bool(self._ready) and not self._retire

    def _work(self, conn: Connection) -> None:
        """Carry ``conn`` as far as the network allows, then park or close it."""
        turn = serve_ready(
            conn,
            self.app,
            self.config,
            self._stopping.is_set,
            self._others_waiting,
            spool_folder=self.spool_folder,
            limits=self._limits,
        )
        if self._park(conn, turn):
            return
        self._close(conn)

    def _park(self, conn: Connection, turn: Turn) -> bool:
        """Hand ``conn`` to the selector as ``turn`` says; False when it is to be closed."""
        outcome = turn.outcome
        if outcome is Outcome.CLOSE:
            return False
        # An idle connection is not kept past the stop; one in the middle of an exchange is
        # given the grace period.
        if outcome is Outcome.HEAD and self._stopping.is_set():
            return False
        if outcome is Outcome.LINGER:
            try:
                conn.start_linger()
            except OSError:
                return False
            deadline = time.monotonic() + LINGER_SECONDS
            return conn.park(Owner.LINGER, deadline, deadline, lambda: self._poller.rearm(conn))
        send = outcome is Outcome.SEND
        return conn.park(
            _PARKED_AS[outcome],
            turn.deadline,
            turn.hard_deadline,
            functools.partial(self._poller.rearm, conn, send=send),
        )

    def _others_waiting(self) -> bool:
        return bool(self._ready)  # read without the lock: a hint, not a decision

    def _close(self, conn: Connection) -> None:
        self._poller.forget(conn)
        conn.close()
        self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        """Count a closed connection out of ``max_connections``."""
        with self._busy_lock:
            self._open -= 1

    def _close_idle(self) -> None:
        """Close connections parked between requests (not those halfway through one)."""
        for conn in list(self._poller.connections.values()):
            if conn.claim(Owner.WORKER, _IDLE) is not None:
                self._close(conn)

    def _drain(self, poller: _Poller, pool: ThreadPoolExecutor) -> None:
        """The graceful stop: no new connections, idle ones closed, busy ones given time."""
        try:
            for listener in self._listeners.values():
                poller.unwatch(listener)
            self._close_listeners()
            # Workers see the stop flag: they answer what they hold with Connection: close,
            # then close instead of parking between requests.
            deadline = time.monotonic() + self.config.grace_period
            while True:
                self._close_idle()
                now = time.monotonic()
                if not poller.connections or now >= deadline:
                    break
                self._poll_once(poller, pool, min(STUCK_AFTER * 5, deadline - now), {})
                self._sweep(time.monotonic())
            with self._busy_lock:
                late = list(self._serving)
                self._ready.clear()  # never started: closed below with everything else
                self._retire = True
                self._work_ready.notify_all()
            for conn in late:
                # Stop a worker busy with it; the worker then closes the socket.
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
            pool.shutdown(wait=True, cancel_futures=True)
            # No worker is left: close everything, parked or cancelled while queued.
            for conn in list(poller.connections.values()):
                self._close(conn)
        finally:
            self.close()
            self._stopped.set()

    def close(self) -> None:
        """Release the sockets of a server that will not serve (again)."""
        self._close_listeners()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None

    def _close_listeners(self) -> None:
        """Close the listening sockets; the files of Unix sockets it bound itself go too
        (handed-in ones belong to whoever bound them)."""
        listeners = list(self._listeners.values())
        self._listeners.clear()
        if self._shared_listener:
            for listener in listeners:
                listener.close()
        else:
            close_listeners(listeners)
