"""Several server processes sharing one listening socket, supervised by a parent.

Rules: the parent binds the sockets *before* forking and keeps them open, so a worker that dies
loses no queued connection: its replacement accepts from the same queue. A TCP listener opened
with ``SO_REUSEPORT`` (``webserver run --workers N`` does) gets a sibling socket on the same
address for each further worker, and the kernel spreads new connections over them by address
and port; one accept queue shared by all workers is drained by whichever is awake, and in a
burst one worker often takes every connection while the others idle (measured: 50 of 50
keep-alive connections on one of two workers). Unix sockets and sockets passed by systemd stay
shared by all workers. The parent starts no threads
(forking a threaded process is unsafe); a worker that exits while the parent is not stopping is
replaced; SIGTERM or SIGINT to the parent is forwarded to every worker as SIGTERM, and the parent
waits for their graceful stops before exiting; a parent that dies without stopping them (SIGKILL,
a crash) takes them with it: each worker asks the kernel for SIGTERM when its parent goes
(``PR_SET_PDEATHSIG``), so no worker keeps serving, unsupervised, on a port nobody owns any
more. Linux and other POSIX systems only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from types import FrameType

from .server import Server

error_log = logging.getLogger("webserver.error")

#: Seconds between checks on the workers: while serving (a crash is noticed this late), and
#: while stopping.
POLL_RUNNING = 0.2
POLL_STOPPING = 0.05
#: After the grace period, workers get this many more seconds before they are killed.
STOP_MARGIN = 5.0
#: A worker that dies this soon after starting is not restarted more than once a second, so a
#: worker that cannot start (a broken handler) does not become a fork loop.
RESTART_BACKOFF = 1.0


#: ``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _follow_parent(parent: int) -> None:
    """Have the kernel send SIGTERM (a graceful stop) to this worker when ``parent`` dies; if it
    already has (between fork and here), stop now. Without ``prctl`` (not Linux) workers outlive a
    killed parent, as before."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def _run_worker(
    make_server: Callable[[list[socket.socket]], Server],
    listeners: list[socket.socket],
    blocked: set[signal.Signals],
) -> int:
    """Body of a forked worker: serve until SIGTERM/SIGINT, then stop gracefully."""
    try:
        server = make_server(listeners)

        def stop(signum: int, frame: FrameType | None) -> None:
            server.shutdown()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        server.serve_forever()
    except BaseException:
        error_log.exception("worker %d failed", os.getpid())
        return 1
    return 0


def _reuses_port(listener: socket.socket) -> bool:
    return listener.family in (socket.AF_INET, socket.AF_INET6) and bool(
        listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    )


def _sibling(listener: socket.socket, backlog: int) -> socket.socket:
    """A socket listening on ``listener``'s address and port, beside it (``SO_REUSEPORT``)."""
    sibling = socket.socket(listener.family, socket.SOCK_STREAM)
    try:
        sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sibling.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if listener.family == socket.AF_INET6:
            v6only = listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            sibling.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sibling.bind(listener.getsockname())
        sibling.listen(backlog)
        sibling.setblocking(False)
    except BaseException:
        sibling.close()
        raise
    return sibling


def _queues_per_worker(
    listeners: list[socket.socket], count: int, backlog: int
) -> list[list[socket.socket]]:
    """The listeners each of ``count`` workers accepts on (see the module rules)."""
    slots: list[list[socket.socket]] = [[] for _ in range(count)]
    for listener in listeners:
        queues = [listener]
        if _reuses_port(listener):
            try:
                queues += [_sibling(listener, backlog) for _ in range(count - 1)]
            except OSError as exc:
                for sibling in queues[1:]:
                    sibling.close()
                queues = [listener]
                error_log.warning("workers share one accept queue: %s", exc.strerror or exc)
        for index, slot in enumerate(slots):
            slot.append(queues[index % len(queues)])
    return slots


class Supervisor:
    """Forks ``count`` workers and keeps that many running until :meth:`stop`; every worker
    accepts on each of ``listeners`` (one socket, or a list), or on its own sibling of it."""

    def __init__(
        self,
        make_server: Callable[[list[socket.socket]], Server],
        listeners: socket.socket | Sequence[socket.socket],
        count: int,
        *,
        grace_period: float,
        kill_after: float = STOP_MARGIN,
        backlog: int = socket.SOMAXCONN,
    ) -> None:
        if count < 1:
            raise ValueError(f"workers must be at least 1, not {count}")
        self.make_server = make_server
        self.listeners = [listeners] if isinstance(listeners, socket.socket) else list(listeners)
        self.count = count
        self.grace_period = grace_period
        #: Seconds past the grace period after which a worker still running is killed.
        self.kill_after = kill_after
        self.workers: set[int] = set()
        #: The listeners of each worker's place, kept when a worker is replaced.
        self._slots = _queues_per_worker(self.listeners, count, backlog)
        self._slot_of: dict[int, int] = {}
        self._stopping = False
        self._last_start = 0.0

    def _spawn(self, slot: int) -> None:
        # Signals stay blocked across fork, so neither side runs the other's handler in between.
        blocked = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:  # the child
                code = 1
                try:
                    _follow_parent(parent)
                    code = _run_worker(self.make_server, self._slots[slot], blocked)
                finally:
                    logging.shutdown()
                    os._exit(code)
            self.workers.add(pid)
            self._slot_of[pid] = slot
            self._last_start = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        if self._stopping:  # a stop arrived while this worker was being born
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        """Begin a graceful stop of every worker (signal-handler safe)."""
        self._stopping = True
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> int:
        """Start the workers and supervise them; returns the exit status for the parent."""
        for slot in range(self.count):
            self._spawn(slot)
        deadline: float | None = None
        while self.workers:
            if self._stopping and deadline is None:
                deadline = time.monotonic() + self.grace_period + self.kill_after
            try:
                # Never block in waitpid: a stop must be able to start its deadline, and a
                # blocking waitpid resumes after the signal handler without returning.
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if deadline is not None and time.monotonic() > deadline:
                    for worker in list(self.workers):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(worker, signal.SIGKILL)
                time.sleep(POLL_STOPPING if deadline is not None else POLL_RUNNING)
                continue
            self.workers.discard(pid)
            slot = self._slot_of.pop(pid, 0)
            if self._stopping:
                continue
            error_log.warning(
                "worker %d exited (status %d); starting another",
                pid,
                os.waitstatus_to_exitcode(status),
            )
            wait = RESTART_BACKOFF - (time.monotonic() - self._last_start)
            if wait > 0:
                time.sleep(wait)
            if not self._stopping:
                self._spawn(slot)
        for listener in {sock for slot_listeners in self._slots for sock in slot_listeners}:
            listener.close()
        return 0
