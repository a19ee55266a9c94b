"""The one configuration object of the server.

Every limit has a named default with its reason next to it; the CLI and library users build the same
frozen dataclass, so a setting can never change under a running server.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from webclient._shared import sizes
from webclient._shared.sizes import GIB as GIB
from webclient._shared.sizes import KIB as KIB
from webclient._shared.sizes import MIB as MIB

from .accesslog import ACCESS_LOG_FORMATS
from .errors import ConfigError

#: Uploads above this are refused with 413: large enough for real files, small enough that one
#: client cannot fill a disk by accident.
DEFAULT_MAX_UPLOAD = 1 * GIB
#: Worker threads. Workers only hold connections that have bytes to read, so a few go a long way.
DEFAULT_THREADS = 8
#: An idle keep-alive connection is closed after this many seconds (no thread is held meanwhile).
DEFAULT_KEEP_ALIVE_TIMEOUT = 15.0
#: A request head must arrive whole within this many seconds of its first byte (slowloris).
DEFAULT_HEADER_TIMEOUT = 10.0
#: Longest wait for the next piece of a request body, in seconds.
DEFAULT_BODY_TIMEOUT = 30.0
#: How long a graceful stop waits for in-flight requests before cutting them off.
DEFAULT_GRACE_PERIOD = 10.0
#: Longest request line (method, target, version) accepted; longer is 414 URI Too Long.
DEFAULT_MAX_REQUEST_LINE = 8 * KIB
#: Largest request head (request line and header fields); larger is 431.
DEFAULT_MAX_HEAD_SIZE = 32 * KIB
#: Most header fields in one request; more is 431.
DEFAULT_MAX_HEADER_COUNT = 100
#: Open connections beyond this get 503 at once; each costs a descriptor and a little memory.
DEFAULT_MAX_CONNECTIONS = 4096
#: Connections waiting for a free worker beyond this get 503 instead of queueing without bound.
DEFAULT_MAX_QUEUE = 1024
#: After this many requests a connection is closed, so no client holds one forever (as nginx).
DEFAULT_MAX_REQUESTS_PER_CONNECTION = 1000
#: Listen backlog: bursts of new connections queue in the kernel rather than being refused.
DEFAULT_BACKLOG = 1024

#: What a Server header may say: visible ASCII words separated by single spaces.
_SERVER_NAME = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
#: A health-check path: visible ASCII after the slash, no query or fragment.
_HEALTH_PATH = re.compile(r"/[\x21\x22\x24-\x3e\x40-\x7e]*")
#: ``[v6]`` or ``[v6]:port``, as in a URL.
_BRACKETED = re.compile(r"\[(?P<host>[^\]]+)\](?::(?P<port>[^:]*))?")


def parse_size(text: str) -> int:
    """Read ``512``, ``64K``, ``10MiB`` or ``1G`` as a byte count (binary units)."""
    try:
        return sizes.parse_size(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class TCPAddress:
    """An IP address and port to listen on (``::`` is dual-stack: IPv4 clients too)."""

    host: str
    port: int


@dataclass(frozen=True)
class UnixAddress:
    """The path of a Unix-domain socket to listen on (for a reverse proxy on the same host)."""

    path: Path


ListenAddress = TCPAddress | UnixAddress


def parse_bind(text: str, port: int) -> ListenAddress:
    """Read one ``--bind`` value: ``HOST``, ``HOST:PORT``, ``[V6]``, ``[V6]:PORT``, a bare
    IPv6 address (``::``), or ``unix:PATH``; ``port`` applies when the value names none."""
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path:
            raise ConfigError("a unix: bind needs a path, as in unix:/run/webserver.sock")
        return UnixAddress(Path(path).expanduser().absolute())
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed:
        host, port_text = bracketed["host"], bracketed["port"]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"not an IPv6 address in brackets: {text!r}") from None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:  # a name, an IPv4 address, or an IPv6 address without a port
        host, port_text = text, None
    if not host:
        raise ConfigError(f"bind address has no host: {text!r}")
    return TCPAddress(host, port if port_text is None else _port(port_text, text))


def _port(text: str, bind: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ConfigError(f"port must be 0..65535 in bind address {bind!r}")
    return int(text)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything a :class:`~webserver.Server` needs to know, validated on construction."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: Addresses to listen on at once (see :func:`parse_bind`); when empty, ``host:port``.
    binds: tuple[str, ...] = ()
    #: Permission bits of Unix sockets the server creates (``0o660``: owner and group), else
    #: as the umask leaves them.
    unix_mode: int | None = None
    root: Path = field(default_factory=lambda: Path("."))
    threads: int = DEFAULT_THREADS
    max_upload: int = DEFAULT_MAX_UPLOAD
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    grace_period: float = DEFAULT_GRACE_PERIOD
    backlog: int = DEFAULT_BACKLOG
    max_request_line: int = DEFAULT_MAX_REQUEST_LINE
    max_head_size: int = DEFAULT_MAX_HEAD_SIZE
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_queue: int = DEFAULT_MAX_QUEUE
    max_requests_per_connection: int = DEFAULT_MAX_REQUESTS_PER_CONNECTION
    #: Log one line per response to the ``webserver.access`` logger.
    access_log: bool = True
    #: ``common``, ``combined`` (adds Referer and User-Agent) or ``json`` (one object a line).
    access_log_format: str = "common"
    server_name: str = "webserver"
    #: A folder without index.html is answered with a listing of its entries (else 404).
    listing: bool = True
    #: Serve and list dot-names (``.git``, ``.env``); ``/.well-known/`` is served either way.
    show_hidden: bool = False
    #: Store nothing: the upload handler is not registered, so POST and PUT on the file tree are
    #: 405 (for a public mirror, where anyone could otherwise write).
    read_only: bool = False
    #: Gzip text-like files of 1 KiB..8 MiB on the fly for clients that accept it (precompressed
    #: ``.br``/``.gz`` siblings are sent either way); never for ranges.
    compress: bool = True
    #: Answer ``GET`` here with a cheap 200 for load balancers, and leave it out of the access log.
    health: str | None = None
    #: Addresses or networks (``10.0.0.0/8``) of reverse proxies whose ``X-Forwarded-For`` or
    #: ``Forwarded`` field names the client; from anyone else those fields are ignored.
    trusted_proxies: tuple[str, ...] = ()
    #: Serve HTTPS with this PEM certificate chain (TLS 1.2 or later, ALPN ``http/1.1``).
    certfile: Path | None = None
    #: The certificate's private key (PEM), when it is not in ``certfile`` itself.
    keyfile: Path | None = None
    #: The password of an encrypted ``keyfile``.
    keyfile_password: str | None = field(default=None, repr=False)
    #: OpenSSL cipher list for TLS 1.2 (as nginx's ``ssl_ciphers``); else the ssl module's
    #: defaults. TLS 1.3 suites are not affected.
    ssl_ciphers: str | None = None
    #: ``trusted_proxies`` parsed once, for the per-request check.
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    #: ``binds`` parsed (or ``host:port``): where the server listens, in order.
    addresses: tuple[ListenAddress, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        root = Path(os.fspath(self.root)).expanduser()
        object.__setattr__(self, "root", root.resolve())
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, not {self.port}")
        if self.threads < 1:
            raise ConfigError(f"threads must be at least 1, not {self.threads}")
        if self.max_upload < 0:
            raise ConfigError(f"max_upload must not be negative, not {self.max_upload}")
        for name in ("keep_alive_timeout", "header_timeout", "body_timeout", "grace_period"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        for name in (
            "backlog",
            "max_request_line",
            "max_head_size",
            "max_header_count",
            "max_connections",
            "max_queue",
            "max_requests_per_connection",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        self._check_names()
        self._check_addresses()
        self._check_tls()
        networks = [_trusted_network(proxy) for proxy in self.trusted_proxies]
        object.__setattr__(self, "trusted_proxies", tuple(self.trusted_proxies))
        object.__setattr__(self, "trusted_networks", tuple(networks))

    def _check_names(self) -> None:
        """The settings that are words or paths rather than numbers."""
        if self.access_log_format not in ACCESS_LOG_FORMATS:
            raise ConfigError(
                f"access_log_format must be one of {', '.join(ACCESS_LOG_FORMATS)},"
                f" not {self.access_log_format!r}"
            )
        if not _SERVER_NAME.fullmatch(self.server_name):
            raise ConfigError(
                f"server_name must be visible ASCII words separated by spaces,"
                f" not {self.server_name!r}"
            )
        if self.health is not None and not _HEALTH_PATH.fullmatch(self.health):
            raise ConfigError(f"health must be a path like /healthz, not {self.health!r}")

    def _check_addresses(self) -> None:
        binds = tuple(self.binds)
        object.__setattr__(self, "binds", binds)
        addresses = [parse_bind(bind, self.port) for bind in binds] or [
            TCPAddress(self.host, self.port)
        ]
        if len(set(addresses)) != len(addresses):
            raise ConfigError("the same address is given twice to bind")
        if self.unix_mode is not None and not 0 <= self.unix_mode <= 0o777:
            raise ConfigError(f"unix_mode must be permission bits 0..0o777, not {self.unix_mode:o}")
        object.__setattr__(self, "addresses", tuple(addresses))

    def _check_tls(self) -> None:
        """TLS settings are consistent (their files are read by the server, once)."""
        for name in ("certfile", "keyfile"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(os.fspath(value)).expanduser())
        if self.certfile is None:
            for name in ("keyfile", "keyfile_password", "ssl_ciphers"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} needs a certfile (TLS is off without one)")

    @property
    def scheme(self) -> str:
        """``https`` when the server speaks TLS, else ``http``."""
        return "http" if self.certfile is None else "https"

    def check_root(self) -> None:
        """Fail early, with a sentence, when the root cannot be served."""
        if not self.root.exists():
            raise ConfigError(f"root folder does not exist: {self.root}")
        if not self.root.is_dir():
            raise ConfigError(f"root is not a folder: {self.root}")


def _trusted_network(proxy: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(proxy, strict=False)
    except ValueError:
        raise ConfigError(
            f"trusted proxy must be an IP address or network, not {proxy!r}"
        ) from None
