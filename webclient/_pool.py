"""Keep-alive connections, kept per origin between uses.

Rules: a connection goes back to the pool only when it is between responses and not closing; an
idle connection the server has closed meanwhile is thrown away before use rather than failing the
request sent on it; the pool is shared by threads, but a connection is used by one thread at a time
(taken out while in use). The pool also remembers the origins that lost a connection with
pipelined requests unanswered: every connection to them, present and future, sends one request at
a time from then on (a server or proxy that mishandles pipelining costs speed, not answers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (a run answered from the cache never loads the connection modules)
    from ._origin import OriginConnection

#: Opens a new connection to ``(host, port)`` speaking ``scheme`` ("http" or "https"), with the
#: client's timeout, limits and TLS settings.
Connect = Callable[[str, int, str], "OriginConnection"]


class ConnectionPool:
    """Idle connections by ``(scheme, host, port)``; counts what it opened."""

    def __init__(self, connect: Connect, *, max_idle: int = 4) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[OriginConnection]] = {}
        self._lock = threading.Lock()
        #: Origins whose pipelined requests were left unanswered: no pipelining to them.
        self._unpipelined: set[tuple[str, str, int]] = set()
        #: Connections opened so far (tests and the summary read it).
        self.opened = 0

    def may_pipeline(self, host: str, port: int, scheme: str = "http") -> bool:
        """Whether requests to the origin may be written ahead of their responses."""
        return (scheme, host, port) not in self._unpipelined

    def stop_pipelining(self, host: str, port: int, scheme: str = "http") -> None:
        """No more pipelining to the origin, for the rest of the run (see the module rules)."""
        with self._lock:
            self._unpipelined.add((scheme, host, port))

    def acquire(self, host: str, port: int, scheme: str = "http") -> OriginConnection:
        """An idle live connection to the origin, or a new one (which may raise)."""
        while True:
            with self._lock:
                idle = self._idle.get((scheme, host, port))
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if conn.reusable and not conn.dropped():
                return conn
            conn.close()
        conn = self._connect(host, port, scheme)
        with self._lock:
            self.opened += 1
        return conn

    def release(self, conn: OriginConnection) -> None:
        """Take a connection back for reuse, or close it when it cannot be reused."""
        if not conn.reusable:
            conn.close()
            return
        with self._lock:
            idle = self._idle.setdefault((conn.scheme, conn.host, conn.port), [])
            if len(idle) < self._max_idle:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()
