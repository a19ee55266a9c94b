"""The one configuration object of the client.

Rules: every setting is keyword-only on a frozen dataclass, checked once in ``__post_init__`` so a
running client never sees an invalid or changing value; the cache folder is resolved here, in the
order ``cache_dir`` argument, ``WEBCLIENT_CACHE_DIR``, ``$XDG_CACHE_HOME/webclient``,
``~/.cache/webclient``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ._shared import VERSION, sizes

# Named here too: the rest of the client imports them from its configuration.
from ._shared.sizes import GIB as GIB
from ._shared.sizes import KIB as KIB
from ._shared.sizes import MIB as MIB
from ._shared.sizes import human_size as human_size
from .errors import ClientConfigError

#: Cache size limit: a gibibyte holds a lot of documents without surprising anyone's disk.
DEFAULT_CACHE_MAX_SIZE = 1 * GIB
#: Largest response body accepted: a server that sends more is cut off instead of filling the disk.
DEFAULT_MAX_BODY_SIZE = 1 * GIB
#: Seconds to wait for a connection, or for the next bytes of a response.
DEFAULT_TIMEOUT = 30.0
#: GET/HEAD requests written ahead of their responses (1: no pipelining). Pipelining is the
#: default because it is made safe where it can go wrong (webclient._pipeline): it starts only once
#: a connection's first response proves HTTP/1.1 keep-alive, nothing is written behind a request
#: other than GET/HEAD, and a server that drops or ignores pipelined requests gets them again one
#: at a time on a new connection. Sixteen in flight hide a 20 ms round trip for small files
#: (1,000 x 1 KiB over the delay proxy: 35x one curl process, 4.7x ``curl --parallel``) and cost
#: at most 15 re-sent requests when a server closes.
DEFAULT_PIPELINE = 16
#: A deep pipeline gains nothing more and risks more re-sent requests when a server closes.
MAX_PIPELINE = 64

# -- transport: TLS, redirects, retries, deadlines, connections --------------------------------

#: Longest timeout or max_time accepted (about 11.6 days): sockets cannot wait 1e300 seconds.
MAX_SECONDS = 1_000_000
#: Redirects followed per request: browsers allow about 20, but a batch tool that needs more than
#: a few is being sent around in circles; 5 matches wget's old default and curl's habit of few.
DEFAULT_MAX_REDIRECTS = 5
#: Retries of a GET/HEAD after a connection error or a 503/429: two cover a restart or a short
#: overload without hammering a server that is really down.
DEFAULT_RETRIES = 2
#: First backoff step in seconds; each retry doubles it, and the wait is drawn at random below it
#: ("full jitter"), so clients failed together do not come back together.
DEFAULT_RETRY_BASE_DELAY = 0.5
#: Seconds of waiting between retries allowed in one run, whatever Retry-After asks: a batch tool
#: must end; a server asking for longer gets its 503 reported instead.
DEFAULT_RETRY_MAX_WAIT = 30.0
#: Keep-alive connections per host, opened only when answers are slow to come (see
#: webclient._spread): six requests in flight instead of one hide most of a slow link's latency
#: even without pipelining, and six is what browsers open per host, so servers and their
#: per-client limits expect it; requests other than GET/HEAD keep to one connection.
DEFAULT_CONNECTIONS = 6
MAX_CONNECTIONS = 32
#: A response body must keep arriving at this many bytes per second, measured over windows of
#: ``timeout`` seconds, or it is cut (a server dripping one byte per read timeout holds nothing).
MIN_RATE = 1.0


def parse_size(text: str) -> int:
    """Read ``512``, ``64K``, ``10MiB`` or ``1G`` as a byte count (binary units)."""
    try:
        return sizes.parse_size(text)
    except ValueError as exc:
        raise ClientConfigError(str(exc)) from None


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the cache lives when no folder is given (XDG base directory rules)."""
    env = os.environ if environ is None else environ
    explicit = env.get("WEBCLIENT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "webclient"
    return Path.home() / ".cache" / "webclient"


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Everything a :class:`~webclient.Client` needs; see the module docstring for the rules."""

    #: Use the on-disk cache at all.
    use_cache: bool = True
    #: The cache folder; ``None`` means :func:`default_cache_dir`.
    cache_dir: Path | None = None
    cache_max_size: int = DEFAULT_CACHE_MAX_SIZE
    #: Largest response body read; a larger one fails its request and is neither saved nor cached.
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    #: Seconds for connecting and for each wait on the server.
    timeout: float = DEFAULT_TIMEOUT
    #: GET/HEAD requests written ahead of their responses on one connection.
    pipeline: int = DEFAULT_PIPELINE
    user_agent: str = f"webclient/{VERSION}"
    #: Hash every stored body before serving it (a body is always checked by its size).
    verify_cache: bool = False
    #: Revalidate every stored response before using it (``Cache-Control: no-cache`` on each
    #: GET, with the stored validators, so an unchanged file still costs only a 304).
    refresh: bool = False
    #: Serve a stored response up to this many seconds past its freshness without asking the
    #: server (``Cache-Control: max-stale``); ``math.inf`` accepts any age. None: only fresh.
    max_stale: float | None = None
    #: Never use the network: serve what is stored, however old; anything else fails with
    #: :class:`~webclient.errors.NotCached`.
    offline: bool = False

    # -- transport: TLS, redirects, retries, deadlines, connections ---------------------------
    #: A PEM file of CA certificates trusted instead of the system's (for a private CA).
    cacert: Path | None = None
    #: Do not verify certificates or host names (said once as a warning).
    insecure: bool = False
    #: Redirects followed per request; 0 returns the 3xx response itself.
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    #: Retries of a GET/HEAD after a connection error or a 503/429.
    retries: int = DEFAULT_RETRIES
    #: Seconds of the first backoff step (doubled each retry, full jitter).
    retry_base_delay: float = DEFAULT_RETRY_BASE_DELAY
    #: Total seconds spent waiting between retries in one call, at most.
    retry_max_wait: float = DEFAULT_RETRY_MAX_WAIT
    #: Seconds a response may take from its first byte to its last; None: no bound.
    max_time: float | None = None
    #: Keep-alive connections per host (each pipelined up to ``pipeline``).
    connections: int = DEFAULT_CONNECTIONS

    def __post_init__(self) -> None:
        if not isinstance(self.use_cache, bool):
            raise ClientConfigError(f"use_cache must be True or False, not {self.use_cache!r}")
        cache_dir = default_cache_dir() if self.cache_dir is None else self.cache_dir
        object.__setattr__(self, "cache_dir", Path(os.fspath(cache_dir)).expanduser())
        _check_size("cache_max_size", self.cache_max_size)
        _check_size("max_body_size", self.max_body_size)
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float):
            raise ClientConfigError(f"timeout must be a number of seconds, not {self.timeout!r}")
        if not self.timeout > 0:
            raise ClientConfigError(f"timeout must be positive, not {self.timeout}")
        _check_at_most("timeout", self.timeout)
        if isinstance(self.pipeline, bool) or not isinstance(self.pipeline, int):
            raise ClientConfigError(f"pipeline must be a whole number, not {self.pipeline!r}")
        if not 1 <= self.pipeline <= MAX_PIPELINE:
            raise ClientConfigError(f"pipeline must be 1..{MAX_PIPELINE}, not {self.pipeline}")
        if not self.user_agent or any(c in self.user_agent for c in "\r\n\0"):
            raise ClientConfigError("user_agent must be a non-empty single line")
        if not isinstance(self.verify_cache, bool):
            raise ClientConfigError(
                f"verify_cache must be True or False, not {self.verify_cache!r}"
            )
        self._check_freshness()
        self._check_transport()

    def _check_transport(self) -> None:
        """TLS, redirect, retry, deadline and connection settings are in range."""
        if self.cacert is not None:
            object.__setattr__(self, "cacert", Path(os.fspath(self.cacert)).expanduser())
        if not isinstance(self.insecure, bool):
            raise ClientConfigError(f"insecure must be True or False, not {self.insecure!r}")
        if self.insecure and self.cacert is not None:
            raise ClientConfigError("cacert and insecure cannot be used together")
        _check_count("max_redirects", self.max_redirects, 0, 100)
        _check_count("retries", self.retries, 0, 100)
        _check_count("connections", self.connections, 1, MAX_CONNECTIONS)
        for name in ("retry_base_delay", "retry_max_wait"):
            _check_seconds(name, getattr(self, name), zero=True)
        if self.max_time is not None:
            _check_seconds("max_time", self.max_time, zero=False)
            _check_at_most("max_time", self.max_time)

    def _check_freshness(self) -> None:
        """The choices about stored responses contradict neither each other nor the cache."""
        for name in ("refresh", "offline"):
            if not isinstance(getattr(self, name), bool):
                raise ClientConfigError(
                    f"{name} must be True or False, not {getattr(self, name)!r}"
                )
        stale = self.max_stale
        if stale is not None and (
            isinstance(stale, bool) or not isinstance(stale, int | float) or not stale >= 0
        ):
            raise ClientConfigError(f"max_stale must be a number of seconds >= 0, not {stale!r}")
        chosen = [n for n in ("refresh", "offline") if getattr(self, n)]
        if stale is not None:
            chosen.append("max_stale")
        if len(chosen) > 1:
            raise ClientConfigError(f"{' and '.join(chosen)} cannot be used together")
        if chosen and not self.use_cache:
            raise ClientConfigError(f"{chosen[0]} needs the cache (use_cache is False)")

    @property
    def cache_path(self) -> Path:
        """The resolved cache folder (never ``None`` after construction)."""
        assert self.cache_dir is not None
        return self.cache_dir


def _check_size(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientConfigError(f"{name} must be a byte count, not {value!r}")
    if value < 0:
        raise ClientConfigError(f"{name} must not be negative, not {value}")


def _check_count(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientConfigError(f"{name} must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise ClientConfigError(f"{name} must be {low}..{high}, not {value}")


def _check_seconds(name: str, value: object, *, zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClientConfigError(f"{name} must be a number of seconds, not {value!r}")
    if not (value >= 0 if zero else value > 0) or value != value or value == float("inf"):
        bound = ">= 0" if zero else "> 0"
        raise ClientConfigError(f"{name} must be a finite number of seconds {bound}, not {value}")


def _check_at_most(name: str, seconds: float) -> None:
    """Refuse more than MAX_SECONDS: a socket timeout of 1e300 (or inf) overflows the system's
    clock type, and no wait that long is meant."""
    if seconds > MAX_SECONDS:
        raise ClientConfigError(f"{name} must be at most {MAX_SECONDS} seconds, not {seconds:g}")
