"""Requests in rounds: redirects followed and failed GET/HEADs retried, across a whole batch.

Rules: every request of a call goes out in the first round (pipelined and in parallel as usual);
a response that redirects (see :mod:`webclient._redirects`) or may be retried (see
:mod:`webclient._retry`) is not a result: its body is discarded and its next request joins the
next round, so a batch keeps its connections busy instead of following one chain at a time.
Before a round with retries the client waits once, the longest wait any of them needs (the
retries of one call never wait more than ``retry_max_wait`` in total). A result is reported only
when final, under the index of the request that started the chain; its ``url`` is where the
answer came from. When ``stop`` is set, no further round starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from ._redirects import check_chain, next_hop
from ._retry import retry_after, retryable_error, retryable_status, wait_before_retry
from .errors import WebClientError

if TYPE_CHECKING:
    from ._models import BodySink, ClientRequest, ClientResponse, Result
    from .config import ClientConfig

#: Runs one round: every request once, ``on_result(position, result)`` for each.
SendRound = Callable[["Sequence[ClientRequest]", "Callable[[int, Result], None]"], None]


# Plain classes with slots, not dataclasses: this module is imported by every run, and a dataclass
# generates and compiles its methods at import.


class _Follow:
    """Send this request next (a redirect)."""

    __slots__ = ("request",)

    def __init__(self, request: ClientRequest) -> None:
        self.request = request


class _Retry:
    """Send the same request again after ``wait`` seconds."""

    __slots__ = ("wait",)

    def __init__(self, wait: float) -> None:
        self.wait = wait


_Next = _Follow | _Retry | None


class _Chain:
    """One request of the call and what became of it so far."""

    __slots__ = (
        "attempts",
        "current",
        "decided",
        "decided_for",
        "methods",
        "result",
        "sent",
        "urls",
    )

    def __init__(self, current: ClientRequest) -> None:
        self.current = current
        self.urls = [current.url]
        #: The method of each request of ``urls`` (a redirect may turn a POST into a GET).
        self.methods = [current.method.upper()]
        self.attempts = 0
        #: What the response of this round leads to, decided when its head arrived.
        self.decided: _Next | WebClientError = None
        self.decided_for = -1
        self.result: Result | None = None
        #: Body bytes uploaded by the requests of the chain that were redirected.
        self.sent = 0


class Rounds:
    """Runs a call's requests until each has a final result; see the module docstring."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        uniform: Callable[[float, float], float],
    ) -> None:
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.uniform = uniform
        #: Seconds waited between retries so far in this call.
        self.waited = 0.0
        self._round = 0
        self._lock = threading.Lock()

    def run(
        self,
        requests: Sequence[ClientRequest],
        send: SendRound,
        on_result: Callable[[int, Result], None] | None = None,
        stop: threading.Event | None = None,
    ) -> list[Result]:
        chains = [_Chain(request) for request in requests]
        report = on_result or (lambda index, result: None)
        pending = list(range(len(chains)))
        while pending:
            retries = self._round_of(chains, pending, send, report)
            pending = [i for i in pending if chains[i].result is None]
            if pending and stop is not None and stop.is_set():
                for index in pending:
                    stopped = WebClientError("not sent: the run was stopped")
                    chains[index].result = stopped
                    report(index, stopped)
                break
            wait = max(retries, default=0.0)
            if pending and wait > 0:
                self.waited += wait
                if stop is not None:
                    stop.wait(wait)
                else:
                    self.sleep(wait)
        return [c.result if c.result is not None else WebClientError("no result") for c in chains]

    def _round_of(
        self,
        chains: list[_Chain],
        pending: list[int],
        send: SendRound,
        report: Callable[[int, Result], None],
    ) -> list[float]:
        """Send the pending chains' requests once; the waits their retries need."""
        self._round += 1
        retries: list[float] = []

        def done(position: int, result: Result) -> None:
            index = pending[position]
            chain = chains[index]
            step = self._step(chain, result)
            if isinstance(step, _Retry):
                with self._lock:
                    retries.append(step.wait)
                chain.attempts += 1
            elif isinstance(step, _Follow):
                chain.urls.append(step.request.url)
                chain.methods.append(step.request.method.upper())
                chain.current = step.request
                if not isinstance(result, WebClientError):
                    chain.sent += result.bytes_sent
            else:
                if isinstance(step, WebClientError):
                    result = step
                elif chain.sent and not isinstance(result, WebClientError):
                    # A POST redirected to a GET still uploaded its body: the answer says so.
                    result = replace(result, bytes_sent=result.bytes_sent + chain.sent)
                chain.result = result
                report(index, result)

        send([self._prepared(chains[i]) for i in pending], done)
        return retries

    def _prepared(self, chain: _Chain) -> ClientRequest:
        """The chain's request, with a sink that skips the body of a response not kept."""
        request = chain.current
        sink = request.sink
        if sink is None:
            return request
        this_round = self._round

        def make(response: ClientResponse) -> BodySink | None:
            step = self._decide(chain, response)
            chain.decided, chain.decided_for = step, this_round
            return sink(response) if step is None else None

        return replace(request, sink=make)

    def _step(self, chain: _Chain, result: Result) -> _Next | WebClientError:
        """What a result leads to: another request, a retry, or (None) nothing: it is final."""
        if isinstance(result, WebClientError):
            return self._decide(chain, result)
        if chain.decided_for == self._round:
            return chain.decided
        return self._decide(chain, result)

    def _decide(
        self, chain: _Chain, result: ClientResponse | WebClientError
    ) -> _Next | WebClientError:
        config = self.config
        request = chain.current
        method = request.method.upper()
        if isinstance(result, WebClientError):
            if chain.attempts < config.retries and retryable_error(method, result):
                return self._retry(chain.attempts, None)
            return None
        if chain.attempts < config.retries and retryable_status(method, result.status):
            step = self._retry(chain.attempts, retry_after(result.headers, self.clock()))
            if step is not None:
                return step
        if config.max_redirects == 0:
            return None
        try:
            hop = next_hop(method, result.url, request.headers, result.status, result.headers)
            if hop is None:
                return None
            check_chain(
                chain.urls, hop.url, config.max_redirects, methods=chain.methods, method=hop.method
            )
        except WebClientError as exc:
            return exc
        body = request.body if hop.keeps_body else None
        return _Follow(
            replace(request, method=hop.method, url=hop.url, headers=hop.headers, body=body)
        )

    def _retry(self, attempt: int, asked: float | None) -> _Retry | None:
        left = self.config.retry_max_wait - self.waited
        wait = wait_before_retry(
            attempt, asked=asked, base=self.config.retry_base_delay, left=left, uniform=self.uniform
        )
        return None if wait is None else _Retry(wait)
