"""How long one response may take: a total bound and a minimum rate.

Rules: the clock of a response starts at its first byte (for a pipelined response whose bytes
are already buffered, when its reading begins). With ``max_time``, the response must be complete
that many seconds later: each read waits at most what is left. Whatever ``max_time``, bytes must
keep coming at ``min_rate`` bytes per second, measured over windows of ``window`` seconds (the
per-read timeout): a server that sends one byte just before each read timeout would otherwise
hold the client forever. Both failures are :class:`~webclient.errors.ResponseTimeout`. The clock
is passed in, so the rules are tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .errors import ResponseTimeout


class ResponseDeadline:
    """The bounds of the response being read on one connection; see the module docstring."""

    __slots__ = (
        "_now",
        "_started",
        "_window_bytes",
        "_window_start",
        "max_time",
        "min_rate",
        "window",
    )

    def __init__(
        self,
        *,
        window: float,
        min_rate: float,
        max_time: float | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.min_rate = min_rate
        self.max_time = max_time
        self._now = now
        self._started: float | None = None
        self._window_start = 0.0
        self._window_bytes = 0

    def begin(self, *, buffered: bool) -> None:
        """A new response is read next; its clock starts now when its bytes are already here."""
        self._started = None
        if buffered:
            self._start(self._now())

    def _start(self, now: float) -> None:
        self._started = self._window_start = now
        self._window_bytes = 0

    def read_timeout(self, timeout: float, where: str) -> float:
        """The timeout of the next read: the per-read timeout, or less when max_time ends first."""
        if self.max_time is None or self._started is None:
            return timeout
        left = self._started + self.max_time - self._now()
        if left <= 0:
            raise self.too_long(where)
        return min(timeout, left)

    def expired(self) -> bool:
        """Whether a read that timed out did so because max_time ran out."""
        if self.max_time is None or self._started is None:
            return False
        return self._now() >= self._started + self.max_time

    def received(self, count: int, where: str) -> None:
        """Count bytes that arrived; raise when the response is too slow or too long."""
        now = self._now()
        started = self._started
        if started is None:
            if not count:
                return
            self._start(now)
            started = now
        self._window_bytes += count
        if self.max_time is not None and now - started > self.max_time:
            raise self.too_long(where)
        elapsed = now - self._window_start
        if elapsed >= self.window:
            # Over the time the window really lasted: it ends with a read, often well past its
            # nominal length, and a drip just under it would otherwise pass at half the rate.
            if self._window_bytes < self.min_rate * elapsed:
                raise ResponseTimeout(
                    f"{where} sent the response too slowly (less than {self.min_rate:g} byte/s"
                    f" over {self.window:g} s); it was cut off"
                )
            self._window_start, self._window_bytes = now, 0

    def too_long(self, where: str) -> ResponseTimeout:
        return ResponseTimeout(
            f"the response from {where} took more than {self.max_time:g} s (max_time); it was"
            " cut off"
        )
