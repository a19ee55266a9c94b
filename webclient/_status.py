"""Where a response came from (kept apart so that importing it loads nothing else)."""

from __future__ import annotations

import enum


class CacheStatus(enum.Enum):
    """Where a response came from."""

    HIT = "hit"  #: fresh in the cache; the network was not used
    REVALIDATED = "revalidated"  #: stale in the cache, confirmed by a 304; the body was not sent
    #: stale in the cache, served (with a warning) because the server could not be reached
    STALE = "stale"
    MISS = "miss"  #: fetched from the server (and stored if allowed)
    BYPASS = "bypass"  #: not a cacheable request, or the cache is off
