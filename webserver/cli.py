"""The ``webserver`` command: ``webserver run`` serves a folder until Ctrl-C or SIGTERM.

A user mistake (missing root, port in use, bad value) is one ``Error:`` line and exit status 2,
never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from webclient._shared.clickusage import OneLineUsage

from . import __version__
from ._tls import build_context
from .accesslog import ACCESS_LOG_FORMATS
from .config import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEAD_SIZE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_REQUESTS_PER_CONNECTION,
    DEFAULT_THREADS,
    ListenAddress,
    ServerConfig,
    UnixAddress,
    parse_size,
)
from .errors import ConfigError
from .mounting import (
    ENTRY_POINT_GROUP,
    Mount,
    apply_mounts,
    check_mounts,
    handler_plugins,
    load_app,
    load_handler,
    replaces_defaults,
)
from .server import (
    Server,
    listener_url,
    open_listeners,
    raise_open_files_limit,
    systemd_listeners,
    unix_path,
)
from .workers import Supervisor

#: A command function a click decorator is applied to.
_F = TypeVar("_F", bound=Callable[..., Any])


class UsageProblem(click.ClickException):
    """A mistake in how the command was called: exit status 2, like click's own usage errors."""

    exit_code = 2


class _OneLineCommand(OneLineUsage, click.Command):
    one_line_error = UsageProblem


class _OneLineGroup(OneLineUsage, click.Group):
    one_line_error = UsageProblem
    command_class = _OneLineCommand


class _Size(click.ParamType):  # type: ignore[type-arg]
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class _Mode(click.ParamType):  # type: ignore[type-arg]
    name = "MODE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return int(str(value), 8)
        except ValueError:
            self.fail(f"not an octal mode: {value!r} (as in 660)", param, ctx)


def _configure_logging(access_log: Path | None, enabled: bool) -> None:
    errors = logging.getLogger("webserver.error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    errors.addHandler(handler)
    errors.setLevel(logging.INFO)
    errors.propagate = False
    access = logging.getLogger("webserver.access")
    access.propagate = False
    if not enabled:
        access.setLevel(logging.CRITICAL)
        return
    target: logging.Handler
    if access_log is None:
        target = logging.StreamHandler(sys.stderr)
    else:
        try:
            target = logging.FileHandler(access_log, encoding="utf-8")
        except OSError as exc:
            raise UsageProblem(f"cannot open access log {access_log}: {exc.strerror}") from None
    target.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(target)
    access.setLevel(logging.INFO)


def _hint(config: ServerConfig) -> None:
    """Say why the first page will be a 404, before a user wonders (after the readiness line)."""
    if not config.listing and not (config.root / "index.html").is_file():
        click.echo(
            f"Note: {config.root} has no index.html and listings are off (--no-listing),"
            " so / answers 404 Not Found."
        )


# One helper per kind of option, so each kind's type, default display and help layout is
# decided once.


def _seconds_option(name: str, default: float, help: str) -> Callable[[_F], _F]:
    """A duration in seconds, above zero."""
    return click.option(
        name,
        type=click.FloatRange(min=0, min_open=True),
        default=default,
        show_default=True,
        help=help,
    )


def _count_option(name: str, default: int, help: str) -> Callable[[_F], _F]:
    """A count of at least one."""
    return click.option(name, type=click.IntRange(1), default=default, show_default=True, help=help)


def _size_option(name: str, default: str, help: str) -> Callable[[_F], _F]:
    """A byte size with an optional K, M, G or T suffix."""
    return click.option(name, type=_Size(), default=default, show_default=True, help=help)


def _file_option(name: str, help: str) -> Callable[[_F], _F]:
    """A file's path (not a folder), None when not given."""
    return click.option(
        name, type=click.Path(dir_okay=False, path_type=Path), default=None, help=help
    )


def _repeated_option(*names: str, metavar: str, help: str) -> Callable[[_F], _F]:
    """An option that may be given several times, collected as a tuple."""
    return click.option(*names, multiple=True, metavar=metavar, help=help)


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="webserver")
def main() -> None:
    """Serve and receive files over HTTP/1.0 and HTTP/1.1."""


@main.command()
@click.argument("port_argument", metavar="[PORT]", required=False, type=click.IntRange(0, 65535))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; the default lets only this machine connect; 0.0.0.0 or ::"
    " (dual-stack) to accept other machines.",
)
@_repeated_option(
    "-b",
    "--bind",
    "binds",
    metavar="ADDR",
    help="Listen here instead of --host (repeatable): HOST (with --port), HOST:PORT,"
    " [IPV6]:PORT, or unix:PATH.",
)
@_file_option(
    "--certfile",
    "Serve HTTPS (TLS 1.2 or later, ALPN http/1.1) with this PEM certificate chain;"
    " the key may be in the same file.",
)
@_file_option("--keyfile", "The certificate's PEM private key, when not in --certfile.")
@click.option(
    "--keyfile-password",
    metavar="TEXT",
    default=None,
    envvar="WEBSERVER_KEYFILE_PASSWORD",
    show_envvar=True,
    help="Password of an encrypted --keyfile (better given in the environment).",
)
@click.option(
    "--ssl-ciphers",
    metavar="LIST",
    default=None,
    help="OpenSSL cipher list for TLS 1.2 (as nginx's ssl_ciphers); default: Python's.",
)
@click.option(
    "--unix-mode",
    type=_Mode(),
    default=None,
    help="Octal permissions of the unix: sockets (e.g. 660); else as the umask leaves them.",
)
@click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="TCP port (also accepted as the one argument); 0 picks a free one (printed on the"
    " first line).",
)
@click.option(
    "-d",
    "--root",
    "--directory",
    "root",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder whose files GET/HEAD serve and where POST/PUT store uploads.",
)
@click.option(
    "--listing/--no-listing",
    default=True,
    show_default=True,
    help="List a folder that has no index.html, as python -m http.server does (else 404).",
)
@click.option(
    "--compress/--no-compress",
    default=True,
    show_default=True,
    help=(
        "Gzip text, JSON, JS, SVG and XML files of 1 KiB to 8 MiB on the fly when the client"
        " accepts gzip (never a range): on by default because it shrinks text several times over"
        " a slow link; off saves CPU on a fast one. Precompressed x.gz/x.br siblings are sent"
        " either way."
    ),
)
@click.option(
    "--read-only",
    is_flag=True,
    help=(
        "Store nothing: POST and PUT answer 405 (with Allow: GET, HEAD, OPTIONS). For a public"
        " mirror."
    ),
)
@click.option(
    "--show-hidden",
    is_flag=True,
    help="Serve and list dot-names (.git, .env); /.well-known/ is served either way.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 1024),
    default=DEFAULT_THREADS,
    show_default=True,
    help=(
        "Handlers running at once. No thread waits on a client: connections waiting for a"
        " request, a body or room to send are parked in the selector and hold none. 8 leaves"
        " room for handlers that block (on a database, say) while others run."
    ),
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Server processes sharing the port; 1 keeps one process (handlers may share state in"
    " memory); set it to the number of cores for throughput.",
)
@_size_option(
    "--max-upload",
    "1G",
    "Largest request body accepted (K, M, G, T suffixes); larger gets 413. 1G: room for real"
    " files, yet no client fills a disk by accident.",
)
@_seconds_option(
    "--keep-alive-timeout",
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    "Seconds an idle keep-alive connection is kept open (it holds a descriptor, no thread).",
)
@_seconds_option(
    "--header-timeout",
    DEFAULT_HEADER_TIMEOUT,
    "Seconds a request head may take from its first byte; then 408, so a client trickling"
    " a head (slowloris) is cut. With TLS, also the handshake, from the connection.",
)
@_seconds_option(
    "--body-timeout",
    DEFAULT_BODY_TIMEOUT,
    "Seconds a request body may go without progress before 408, and a response the"
    " client does not read before the connection is dropped; past it, each must also"
    " keep 500 bytes/s on average. 30 s rides out a brief stall on a slow link.",
)
@_seconds_option(
    "--grace-period",
    DEFAULT_GRACE_PERIOD,
    "On Ctrl-C/SIGTERM, seconds in-flight requests get to finish before they are cut off.",
)
@_count_option(
    "--max-connections",
    DEFAULT_MAX_CONNECTIONS,
    "Open connections beyond this are answered 503 with Retry-After; each costs a file"
    " descriptor (the open-files limit is raised to fit) and a little memory.",
)
@_count_option(
    "--max-queue",
    DEFAULT_MAX_QUEUE,
    "Requests ready to run (fully received) waiting for a free thread; a new request"
    " beyond this is answered 503 at once rather than queued without bound. Clients still"
    " sending or reading are not counted.",
)
@_count_option(
    "--max-requests-per-connection",
    DEFAULT_MAX_REQUESTS_PER_CONNECTION,
    "Close a keep-alive connection after this many requests, so no client holds one"
    " forever (as nginx).",
)
@_size_option(
    "--max-head-size",
    f"{DEFAULT_MAX_HEAD_SIZE // 1024}K",
    "Largest request head (request line and header fields; room for large cookies);"
    " larger gets 431.",
)
@_file_option("--access-log", "Append the access log to this file instead of stderr.")
@click.option(
    "--access-log-format",
    type=click.Choice(ACCESS_LOG_FORMATS),
    default="common",
    show_default=True,
    help="common (CLF), combined (adds Referer and User-Agent) or json (one object a line).",
)
@click.option("--no-access-log", is_flag=True, help="Do not log requests.")
@_repeated_option(
    "--handler",
    "handlers",
    metavar="[/PREFIX=]MODULE:CLASS|PLUGIN",
    help="Serve PREFIX and below with a webserver.Handler subclass, or with an installed plugin"
    " by name (see `webserver handlers`). Repeatable.",
)
@_repeated_option(
    "--app",
    "apps",
    metavar="[/PREFIX=]MODULE:CALLABLE",
    help="Serve PREFIX (default /) and below with a WSGI application (Flask...). Repeatable.",
)
@click.option(
    "--health",
    metavar="PATH",
    default=None,
    help="Answer GET PATH (e.g. /healthz) with 200 for load balancers; not logged.",
)
@_repeated_option(
    "--trusted-proxy",
    "trusted_proxies",
    metavar="ADDR",
    help="A reverse proxy (address or CIDR network) whose X-Forwarded-For/Forwarded names the"
    " client in the access log and request.client. Repeatable.",
)
def run(
    port_argument: int | None,
    workers: int,
    access_log: Path | None,
    no_access_log: bool,
    handlers: tuple[str, ...],
    apps: tuple[str, ...],
    **settings: Any,
) -> None:
    """Serve the files under --root until Ctrl-C or SIGTERM.

    GET and HEAD return files (a folder serves its index.html, else a listing), with ETag and
    Last-Modified for caches and byte ranges for resuming; POST /name stores the request body as
    a new file under the root and never overwrites one; PUT /name stores it at exactly that
    name, replacing it atomically (If-Match, If-None-Match: * honoured); --read-only turns both
    off. The first line on stdout, once connections are accepted, is "Serving ROOT on
    http://HOST:PORT/".
    """
    if port_argument is not None:
        source = click.get_current_context().get_parameter_source("port")
        if source is not click.core.ParameterSource.DEFAULT and settings["port"] != port_argument:
            raise UsageProblem(f"two ports given: {port_argument} and --port {settings['port']}")
        settings["port"] = port_argument
    try:
        # Every other option is named after the ServerConfig field it sets.
        config = ServerConfig(access_log=not no_access_log, **settings)
        config.check_root()
        build_context(config)  # certificate and key problems before anything listens
        mounts = _load_mounts(config, handlers, apps, multiprocess=workers > 1)
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    _configure_logging(access_log, not no_access_log)
    notice = raise_open_files_limit(config.max_connections * workers)
    if notice:
        click.echo(notice, err=True)
    # Sockets passed by systemd (socket activation) replace --host/--bind; systemd owns them.
    activated = systemd_listeners()
    listeners = activated or _listen(config, reuse_port=workers > 1)
    # The files of the Unix sockets we bound go when we stop (not systemd's: it owns them).
    unix_files = [] if activated else [unix_path(sock) for sock in listeners]
    # One address keeps the original line; several are joined by ", ".
    urls = ", ".join(listener_url(sock, config.scheme) for sock in listeners)
    ready = f"Serving {config.root} on {urls}"
    if workers > 1:
        supervisor = Supervisor(
            lambda socks: _build_server(config, mounts, socks),
            listeners,
            workers,
            grace_period=config.grace_period,
            backlog=config.backlog,
        )
        signal.signal(signal.SIGINT, supervisor.stop)
        signal.signal(signal.SIGTERM, supervisor.stop)
        click.echo(ready)
        _hint(config)
        sys.stdout.flush()
        click.echo(f"{workers} worker processes share the port", err=True)
        try:
            sys.exit(supervisor.run())
        finally:
            _remove(unix_files)
    server = _build_server(config, mounts, listeners)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.shutdown()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    click.echo(ready)
    _hint(config)
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        _remove(unix_files)


def _remove(files: list[Path | None]) -> None:
    for path in files:
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()


def _listen(config: ServerConfig, *, reuse_port: bool) -> list[socket.socket]:
    """Every listening socket, or one line saying which address failed and why."""
    try:
        return open_listeners(config, reuse_port=reuse_port)
    except OSError as exc:
        where = exc.filename or ", ".join(map(_describe, config.addresses))
        if exc.errno == errno.EADDRINUSE:
            raise UsageProblem(f"{where} is already in use") from None
        if exc.errno == errno.EACCES:
            raise UsageProblem(
                f"not allowed to listen on {where} (ports below 1024 need root)"
            ) from None
        raise UsageProblem(f"cannot listen on {where}: {exc.strerror or exc}") from None


def _describe(address: ListenAddress) -> str:
    if isinstance(address, UnixAddress):
        return f"unix:{address.path}"
    return f"port {address.port} on {address.host}"


def _load_mounts(
    config: ServerConfig, handlers: tuple[str, ...], apps: tuple[str, ...], *, multiprocess: bool
) -> list[Mount]:
    mounts = [load_handler(spec, config) for spec in handlers]
    mounts += [load_app(spec, config, multiprocess=multiprocess) for spec in apps]
    check_mounts(mounts)
    return mounts


def _build_server(
    config: ServerConfig, mounts: list[Mount], listeners: list[socket.socket]
) -> Server:
    server = Server(config, listener=listeners, default_routes=not replaces_defaults(mounts))
    apply_mounts(server, mounts)
    return server


@main.command()
def handlers() -> None:
    """List the handler plugins installed under the webserver.handlers entry-point group.

    One line each: the name to give --handler (``--handler /prefix=NAME``), then what it loads.
    """
    plugins = handler_plugins()
    if not plugins:
        click.echo(
            f"no handler plugins installed (entry-point group {ENTRY_POINT_GROUP})", err=True
        )
    for name, entry in plugins.items():
        click.echo(f"{name}\t{entry.value}")
