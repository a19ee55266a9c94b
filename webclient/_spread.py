"""Spreading one origin's requests over several keep-alive connections.

Rules: only runs made of GET and HEAD requests are spread (anything else keeps every request on
one connection, so a POST and the requests around it stay in order); requests are dealt in turn,
so the first ones finish first on every connection and results come back nearly in order; a
request for a URL seen before in the run goes to the same connection as the first, so it can be
answered from the cache that one filled rather than fetched twice at once; no connection is
opened for fewer than one request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Methods whose requests may be spread: safe ones, whose order does not matter to the server.
SPREAD_METHODS = frozenset({"GET", "HEAD"})


def spread(
    items: Sequence[T],
    connections: int,
    *,
    method: Callable[[T], str],
    key: Callable[[T], str],
) -> list[list[T]]:
    """The items split into at most ``connections`` runs (one run when they cannot be spread)."""
    count = min(connections, len(items))
    if count <= 1 or any(method(item).upper() not in SPREAD_METHODS for item in items):
        return [list(items)] if items else []
    runs: list[list[T]] = [[] for _ in range(count)]
    home: dict[str, int] = {}
    turn = 0
    for item in items:
        where = home.get(key(item))
        if where is None:
            where = home[key(item)] = turn % count
            turn += 1
        runs[where].append(item)
    return [run for run in runs if run]
