"""Spreading one origin's requests over several keep-alive connections, when it pays.

Rules: a run starts on one connection. Each connection takes the next request from one shared
queue when it has room for it, so requests leave in order and results come back nearly in order.
Once the first :data:`SAMPLES` requests have their answers (or the first alone, when it took
over :data:`CLEARLY_SLOW`), if the median time from taking a request to its answer is over
:data:`SPREAD_LATENCY`, up to ``connections - 1`` more connections
are opened to share what is left: the time goes to waiting (a slow link, a slow server), and more
requests in flight hide it. Below it the client is busy, not waiting: on localhost more
connections only add threads contending for the interpreter (1,000 x 1 KiB from nginx: 20%
slower with 6 than with 1). Only runs made of GET and HEAD requests are spread: anything else
keeps every request on one connection, so a POST and the requests around it stay in order.

Pipelining waits for the decision (:meth:`SharedQueue.ahead`): until it, a connection has one
request in flight, so the answers measured are round trips, not places in a pipeline, and the
first connection does not take the whole queue before the others open; after a decision to
spread, each connection writes ahead at most its share of what was left, rounded down (8 x
16 MiB over a 20 ms round trip: the files go to whichever of six connections is free, instead
of down the first one's pipeline).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

#: Methods whose requests may be spread: safe ones, whose order does not matter to the server.
SPREAD_METHODS = frozenset({"GET", "HEAD"})
#: Answers measured before deciding.
SAMPLES = 3
#: Median seconds from taking a request to its answer above which more connections are opened:
#: on localhost an answer takes 0.1-1 ms even on a loaded machine, across a network or from a
#: slow server several ms; 4 ms keeps a LAN's sub-millisecond round trips on one connection.
SPREAD_LATENCY = 0.004
#: A first answer this slow decides alone: a large file or a distant server, where waiting for two
#: more answers before opening the others would cost two more of them.
CLEARLY_SLOW = 10 * SPREAD_LATENCY


def spreadable(methods: Iterable[str]) -> bool:
    """Whether requests with these methods may go over several connections."""
    return all(method.upper() in SPREAD_METHODS for method in methods)


class SharedQueue(Generic[T]):
    """One origin's requests, taken in order by however many connections run them.

    ``more(count)`` is called once, from the thread that recorded the deciding answer, when
    ``count`` more connections should be opened.
    """

    def __init__(
        self,
        items: Iterable[tuple[int, T]],
        *,
        connections: int,
        more: Callable[[int], None],
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._items: deque[tuple[int, T]] = deque(items)
        self._connections = connections
        self._more = more
        self._now = now
        self._lock = threading.Lock()
        self._taken: dict[int, float] = {}
        self._latencies: list[float] = []
        self._decided = connections <= 1
        #: Requests one connection may have in flight, once decided (None: no bound).
        self._share: int | None = None

    def ahead(self) -> int | None:
        """How many requests one connection may have in flight now (None: as many as it likes):
        one until the decision, then its share of what was left when more were opened."""
        if not self._decided:
            return 1
        return self._share

    def take(self) -> Iterator[tuple[int, T]]:
        """The requests one connection runs: the next one whenever it asks."""
        while True:
            with self._lock:
                if not self._items:
                    return
                item = self._items.popleft()
                if not self._decided:
                    self._taken[item[0]] = self._now()
            yield item

    def answered(self, index: int) -> None:
        """Note that request ``index`` has its result; may open more connections."""
        if self._decided:
            return
        with self._lock:
            taken = self._taken.pop(index, None)
            if taken is None or self._decided:
                return
            latency = self._now() - taken
            self._latencies.append(latency)
            clearly_slow = len(self._latencies) == 1 and latency > CLEARLY_SLOW
            if len(self._latencies) < SAMPLES and not clearly_slow:
                return
            self._decided = True
            slow = (
                clearly_slow or sorted(self._latencies)[len(self._latencies) // 2] > SPREAD_LATENCY
            )
            count = min(self._connections - 1, len(self._items)) if slow else 0
            if count:
                # Rounded down: with fewer than two requests left per connection (a few large
                # files), none is committed to a connection ahead of time, and whichever
                # connection is free first takes the next one.
                self._share = max(1, len(self._items) // (count + 1))
        if count > 0:
            self._more(count)
