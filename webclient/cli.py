"""The ``webclient`` command: a thin layer of options and messages over the library.

Rules: every failure the user can cause ends with one line on stderr and an exit status, never
a traceback (``batch``, ``get``, ``head``, ``post``: 0 when every command succeeded, 1 when any
failed, 2 for an invalid command file, URL or options, when nothing is sent); the one-off commands
are one-line batches: same options, same cache, same reports; settings are validated by
:class:`~webclient.ClientConfig`, not here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from ._shared.clickusage import OneLineUsage
from .config import ClientConfig, default_cache_dir, human_size, parse_size
from .errors import CacheError, ClientConfigError, CommandFileError

if TYPE_CHECKING:
    from ._cache import Cache
    from ._reporting import CommandOutcome
    from .commands import Command


class _OneLineError(click.ClickException):
    """A failure shown as one ``error:`` line, like the failed commands of a batch."""

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class InvalidCommandFile(click.ClickException):
    """Exit status 2, and every invalid line on its own line (``FILE:LINE: message``)."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        click.echo(self.message, err=True)


class CacheUnavailable(_OneLineError):
    exit_code = 1


class InvalidSetting(_OneLineError):
    """Invalid options or arguments: exit status 2, nothing sent."""

    exit_code = 2


class _Command(OneLineUsage, click.Command):
    one_line_error = InvalidSetting


class _Group(OneLineUsage, click.Group):
    one_line_error = InvalidSetting
    command_class = _Command
    group_class = type


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ClientConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _max_stale(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--max-stale`` alone accepts any staleness; with a value, that many seconds."""
    if value is None:
        return None
    if value == "any":
        return float("inf")
    if not (value.isascii() and value.isdigit()):  # isdigit alone takes "\xb2", which float refuses
        raise click.BadParameter(f"not a number of seconds: {value!r}")
    return float(value)


def _stderr_warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="webclient")
def main() -> None:
    """Fetch and upload files in batches over HTTP/1.x, with a persistent cache."""


def _run_options(function: Callable[..., None]) -> Callable[..., None]:
    """The options every command that sends requests takes (``batch``, ``get``, ``head``,
    ``post``): the cache, limits, concurrency and output, then how requests travel."""
    options = [
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Cache folder (default: $WEBCLIENT_CACHE_DIR, else $XDG_CACHE_HOME/webclient,"
            " else ~/.cache/webclient).",
        ),
        click.option(
            "--no-cache",
            is_flag=True,
            help="Neither use nor fill the cache; what is stored for the URLs fetched is removed.",
        ),
        click.option(
            "--refresh",
            is_flag=True,
            help="Revalidate every stored response with the server"
            " (an unchanged file costs a 304).",
        ),
        click.option(
            "--max-stale",
            metavar="[SECONDS]",
            is_flag=False,
            flag_value="any",
            callback=_max_stale,
            help="Use stored responses up to SECONDS past their freshness"
            " (any age without a value).",
        ),
        click.option(
            "--offline",
            is_flag=True,
            help="Use only what is stored, however old; anything not stored fails.",
        ),
        click.option(
            "--cache-max-size",
            default="1G",
            metavar="SIZE",
            show_default=True,
            callback=_size,
            help="Cache size limit (K, M, G, T suffixes); past it the least recently used"
            " entries go. 1G keeps the disk a cache takes bounded.",
        ),
        click.option(
            "--max-size",
            default="1G",
            metavar="SIZE",
            show_default=True,
            callback=_size,
            help="Largest response body accepted (K, M, G, T suffixes); a larger one fails its"
            " command. 1G: no server fills the disk by accident.",
        ),
        click.option(
            "--pipeline",
            type=click.IntRange(1, 64),
            default=16,
            show_default=True,
            help="GET/HEAD requests written ahead of their responses on one connection; 1 turns"
            " pipelining off. On by default because it is only used where it is safe: after a"
            " connection's first answer shows HTTP/1.1 keep-alive, never behind a POST, and a"
            " server that drops pipelined requests gets them again one at a time.",
        ),
        click.option(
            "--parallel",
            type=click.IntRange(1, 64),
            default=1,
            show_default=True,
            help="Hosts served at the same time, each in its own thread; 1 suits a batch to"
            " one host. Printed output stays in command order either way.",
        ),
        click.option("--quiet", "-q", is_flag=True, help="Report failures only; no summary."),
        click.option("--no-print", is_flag=True, help="Do not show bodies on stdout."),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=30.0,
            show_default=True,
            help="Seconds to wait for a connection or for the server; 30 rides out a busy"
            " server without a long wait on a silent one.",
        ),
        click.option(
            "--verify-cache",
            is_flag=True,
            help="Hash every cached body before serving it (off: hashing rereads every body;"
            " each is always checked by size).",
        ),
        # -- output for scripts and people ----------------------------------------------------
        click.option(
            "--json",
            "json_lines",
            is_flag=True,
            help="Print one JSON object per command, then a summary object, on stdout"
            " (no bodies; errors still on stderr).",
        ),
        click.option(
            "--progress",
            is_flag=True,
            help="Show progress on stderr even when it is not a terminal (never with --json).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return _transport_options(function)


def _transport_options(function: Callable[..., None]) -> Callable[..., None]:
    """The options that shape how requests travel (TLS, redirects, retries, deadlines,
    connections); each lands in ClientConfig unchanged."""
    options = [
        click.option(
            "--cacert",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Trust only the CA certificates in this PEM file for https (default: the"
            " system's).",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            help="Do not verify https certificates or host names (says so in a warning).",
        ),
        click.option(
            "--max-redirects",
            type=click.IntRange(0, 100),
            default=5,
            show_default=True,
            help="Redirects followed per command (0: a 3xx is the answer); the file keeps the"
            " command's name. 5 is the bound RFC 2616 recommended: enough for real sites,"
            " short for a loop.",
        ),
        click.option(
            "--retries",
            type=click.IntRange(0, 100),
            default=2,
            show_default=True,
            help="Retries of a GET or HEAD after a connection error, 503 or 429 (backoff with"
            " jitter, Retry-After honoured, at most 30 s of waiting per run, so a batch ends);"
            " 2 rides out a restart or a brief overload.",
        ),
        click.option(
            "--max-time",
            type=click.FloatRange(min=0, min_open=True),
            help="Seconds one response may take from its first byte to its last (default: no"
            " bound, but a body slower than 1 byte/s over --timeout seconds is cut).",
        ),
        click.option(
            "--connections",
            type=click.IntRange(1, 32),
            default=6,
            show_default=True,
            help="Keep-alive connections per host, each pipelined up to --pipeline, opened when"
            " answers take over 4 ms (a slow link or server; on localhost one is fastest); 6 is"
            " what browsers open per host. A host with a POST keeps one connection, in order.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@main.command()
@click.argument("command_file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default="current folder",
    help="Folder where GET bodies are saved.",
)
@click.option(
    "--upload-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder POST may read files from (default: the command file's folder).",
)
@_run_options
def batch(command_file: Path, out_dir: Path, upload_root: Path | None, **settings: Any) -> None:
    """Run the GET and POST commands of COMMAND_FILE ("-": read them from stdin).

    Each line is GET or POST, a file name, a host and an optional port (80 by default; it may
    be written in brackets), separated by spaces, e.g. "GET index.html 127.0.0.1 8080"; or GET
    or POST and a URL, e.g. "GET http://127.0.0.1:8080/index.html". GET prints the file and
    saves it under --out; POST uploads the local file of that name. Blank lines and lines
    starting with # are skipped. Exit status: 0 when every command succeeded, 1 when one
    failed, 2 when nothing was sent (an invalid line, a bad option).
    """
    from .commands import read_command_file, read_commands

    _refuse_together_settings(settings)
    from_stdin = str(command_file) == "-"
    try:
        if from_stdin:
            commands = read_commands(sys.stdin.buffer, "<stdin>")
        else:
            commands = read_command_file(command_file)
    except CommandFileError as exc:
        raise InvalidCommandFile(str(exc)) from None
    name = "<stdin>" if from_stdin else command_file
    empty = f"{name} has no commands (lines are: GET|POST file host [port])"
    if upload_root is None:
        upload_root = Path(".") if from_stdin else command_file.parent
    _run(commands, settings, out_dir=out_dir, upload_root=upload_root, empty=empty)


@main.command()
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@click.option(
    "-o",
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Save the body to this file instead of showing it (one URL only; - is stdout).",
)
@_run_options
def get(urls: tuple[str, ...], out_file: Path | None, **settings: Any) -> None:
    """Fetch each URL and show its body on stdout (save it with -o FILE), through the cache.

    Takes the options of "batch" but --out FOLDER and --upload-root; exit status as for
    "batch": 0 when every URL succeeded, 1 when one failed, 2 when nothing was sent.
    """
    _refuse_together_settings(settings)
    commands = _url_commands("GET", urls)
    if out_file is None or str(out_file) == "-" or _is_stdout(out_file):
        _run(commands, settings, out_dir=Path("."), spool=True)
        return
    if len(commands) > 1:
        raise InvalidSetting("-o names one file: give one URL (or use batch --out FOLDER)")
    if not out_file.name:  # "-o ''" is Path("."), which click's dir_okay=False lets through
        raise InvalidSetting("-o needs a file name")
    if _is_devnull(out_file):  # curl's idiom: fetch, report, keep nothing
        _run(commands, dict(settings, no_print=True), out_dir=Path("."), spool=True)
        return
    _refuse_special_file(out_file)
    folder = out_file.parent
    _run(commands, settings, out_dir=folder, save_names={0: out_file.name}, quiet_print=True)


def _is_devnull(path: Path) -> bool:
    return os.path.realpath(path) == os.devnull


def _is_stdout(path: Path) -> bool:
    """Whether ``path`` is where stdout goes (``-o /dev/stdout``): then it is ``-o -``."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):  # not there, or a stdout without a descriptor
        return False


def _refuse_special_file(path: Path) -> None:
    """Refuse an -o that is no regular file: the body is written beside it and renamed over it,
    which would replace a device, a pipe or /dev/stdout (a link into /proc) with a plain file."""
    import stat

    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except OSError:
        mode = stat.S_IFREG  # nothing there yet (or not reachable): the save reports it
    if not stat.S_ISREG(mode) or real.startswith("/proc/"):  # (/dev/shm holds plain files)
        raise InvalidSetting(
            f"-o {path} is not a regular file: use -o - for stdout, -o {os.devnull} to discard"
        )


@main.command()
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@_run_options
def head(urls: tuple[str, ...], **settings: Any) -> None:
    """Ask for each URL's status and header fields (HEAD) and show them on stdout.

    Takes the options of "batch" but --out and --upload-root; exit status as for "batch".
    """
    _refuse_together_settings(settings)
    _run(_url_commands("HEAD", urls), settings, out_dir=Path("."))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("url")
@_run_options
def post(file: Path, url: str, **settings: Any) -> None:
    """Upload FILE as the body of a POST to URL.

    Takes the options of "batch" but --out and --upload-root; exit status as for "batch".
    """
    _refuse_together_settings(settings)
    _run(_url_commands("POST", (url,)), settings, out_dir=Path("."), uploads={0: file})


def _url_commands(method: str, urls: Sequence[str]) -> list[Command]:
    """The commands for URLs given on the command line; an invalid one is status 2."""
    from .commands import command_for_url

    try:
        return [command_for_url(method, url) for url in urls]
    except CommandFileError as exc:
        raise InvalidSetting(str(exc)) from None


def _refuse_together_settings(settings: dict[str, Any]) -> None:
    _refuse_together(
        no_cache=settings["no_cache"],
        refresh=settings["refresh"],
        max_stale=settings["max_stale"],
        offline=settings["offline"],
    )


def _run(
    commands: Sequence[Command],
    settings: dict[str, Any],
    *,
    out_dir: Path,
    upload_root: Path | None = None,
    spool: bool = False,
    save_names: dict[int, str] | None = None,
    uploads: dict[int, Path] | None = None,
    quiet_print: bool = False,
    empty: str = "",
) -> None:
    """Send ``commands`` with the shared options; exit 1 when one failed (see the rules).

    ``empty`` is the warning for a run without commands, given once the options are known to
    be good (an unusable --cacert is then the only line)."""
    from ._batch import BatchRun
    from .client import Client

    try:
        config = ClientConfig(
            use_cache=not settings["no_cache"],
            cache_dir=settings["cache_dir"],
            cache_max_size=settings["cache_max_size"],
            max_body_size=settings["max_size"],
            timeout=settings["timeout"],
            pipeline=settings["pipeline"],
            verify_cache=settings["verify_cache"],
            refresh=settings["refresh"],
            max_stale=settings["max_stale"],
            offline=settings["offline"],
            cacert=settings["cacert"],
            insecure=settings["insecure"],
            max_redirects=settings["max_redirects"],
            retries=settings["retries"],
            max_time=settings["max_time"],
            connections=settings["connections"],
        )
    except ClientConfigError as exc:
        raise InvalidSetting(str(exc)) from None
    stdout = sys.stdout.buffer
    stderr = sys.stderr
    runs: list[BatchRun] = []

    def warn(message: str) -> None:
        # Through the run once there is one, so a warning never lands inside the progress line.
        if runs:
            runs[0].warn(message)
        else:
            _stderr_warn(message)

    try:
        client = Client(config, warn=warn)
    except ClientConfigError as exc:  # a --cacert file that cannot be used
        raise InvalidSetting(str(exc)) from None
    if not commands and empty:
        _stderr_warn(empty)
    with client:
        run = BatchRun(
            client,
            commands,
            out_dir=out_dir,
            stdout=stdout,
            stderr=stderr,
            print_bodies=not settings["no_print"] and not quiet_print,
            quiet=settings["quiet"],
            parallel=settings["parallel"],
            progress=settings["progress"] or (stderr.isatty() and not settings["quiet"]),
            progress_tty=stderr.isatty(),
            stdout_is_tty=stdout.isatty(),
            upload_root=upload_root,
            json_lines=settings["json_lines"],
            spool=spool,
            save_names=save_names,
            uploads=uploads,
        )
        runs.append(run)
        summary = run.run()
    if settings["no_cache"]:
        _forget_fetched(settings["cache_dir"], summary.outcomes)
    if run.stdout_closed or run.stderr_closed:
        # The reader went away (``| head``): end quietly, with nothing left to flush at exit.
        _silence(stdout, run.stdout_closed)
        _silence(sys.stderr, run.stderr_closed)
        raise click.exceptions.Exit(1)
    if summary.failed:
        raise click.exceptions.Exit(1)


def _refuse_together(**chosen: object) -> None:
    """At most one of the options about stored responses (one error line, status 2)."""
    names = [f"--{name.replace('_', '-')}" for name, value in chosen.items() if value]
    if len(names) > 1:
        raise InvalidSetting(f"{' and '.join(names)} cannot be used together")


def _forget_fetched(cache_dir: Path | None, outcomes: Sequence[CommandOutcome]) -> None:
    """After a ``--no-cache`` run, drop what the cache holds for every URL it fetched: a later
    run must not go back to a copy older than the one just saved."""
    # The command's own URL too: when the answer came through a redirect, the stored redirect
    # would lead a later run back to where it used to point.
    urls = [
        url
        for o in outcomes
        if o.response is not None and o.response.method == "GET"
        for url in dict.fromkeys((o.command.url, o.response.url))
    ]
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    if not urls or not folder.is_dir():
        return  # nothing was fetched, or nothing was ever stored (and looking creates nothing)
    from ._cache import Cache

    try:
        store = Cache(folder, max_size=0, warn=_stderr_warn)
    except CacheError as exc:
        _stderr_warn(f"could not remove the older stored copies: {exc}")
        return
    try:
        store.remove(urls)
    except CacheError as exc:
        _stderr_warn(f"could not remove the older stored copies: {exc}")
    finally:
        store.close()


def _silence(stream: Any, closed: bool) -> None:
    """Point a stream whose reader has gone at the null device (the Python documentation's
    advice for SIGPIPE), so that the final flush at exit raises nothing."""
    if not closed:
        return
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):
        return  # not a real file (tests): nothing is flushed at exit
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


@main.group()
def cache() -> None:
    """Look at or empty the response cache."""


@contextlib.contextmanager
def _cache_at(cache_dir: Path | None) -> Iterator[Cache]:
    """The cache folder opened for a ``cache`` command; any failure is one line, status 1."""
    from ._cache import Cache

    folder = cache_dir if cache_dir is not None else default_cache_dir()
    try:
        store = Cache(folder, max_size=0, warn=_stderr_warn)
    except CacheError as exc:
        raise CacheUnavailable(str(exc)) from None
    try:
        yield store
    except CacheError as exc:
        raise CacheUnavailable(str(exc)) from None
    finally:
        store.close()


_cache_dir_option = click.option(
    "--cache-dir",
    # Not file_okay=False: a file there is the cache's own error (status 1), as documented.
    type=click.Path(path_type=Path),
    help="Cache folder (default: $WEBCLIENT_CACHE_DIR, else $XDG_CACHE_HOME/webclient,"
    " else ~/.cache/webclient).",
)


@cache.command("info")
@_cache_dir_option
@click.option(
    "--check",
    is_flag=True,
    help="Read every stored response and hash every body; drop what cannot be used.",
)
def cache_info(cache_dir: Path | None, check: bool = False) -> None:
    """Where the cache is and how much it holds."""
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    _refuse_unusable(folder)
    if not folder.exists():
        # Looking must not create it.
        click.echo(f"folder: {folder} (not created yet)")
        click.echo("responses: 0")
        click.echo("bodies: 0")
        click.echo(f"size: {human_size(0)} (0 bytes)")
        click.echo(f"temporary files: 0 ({human_size(0)})")
        return
    with _cache_at(cache_dir) as store:
        report = store.check() if check else None
        info = store.info()
    click.echo(f"folder: {info.folder}" + (" (read-only)" if info.read_only else ""))
    click.echo(f"responses: {info.entries}")
    click.echo(f"bodies: {info.bodies}")
    click.echo(f"size: {human_size(info.size)} ({info.size} bytes)")
    click.echo(f"temporary files: {info.temp_files} ({human_size(info.temp_size)})")
    if report is not None:
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        click.echo(
            f"checked: {report.rows} responses, {report.bodies} bodies;"
            f" dropped {report.dropped_rows} responses, removed {report.removed_files}"
            " unused body files"
        )


def _refuse_unusable(folder: Path) -> None:
    """A cache path that is a file, or lies under one, is an error (status 1), not a cache
    that is "not created yet"."""
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == folder else f"is under a file ({path})"
                raise CacheUnavailable(f"the cache folder {folder} {what}")
            return


@cache.command("clear")
@_cache_dir_option
@click.argument("urls", nargs=-1, metavar="[URL]...")
def cache_clear(cache_dir: Path | None, urls: tuple[str, ...] = ()) -> None:
    """Delete every stored response, or only those of the URLs given (all their variants)."""
    from .client import split_url
    from .errors import InvalidURL

    for url in urls:
        try:
            split_url(url)
        except InvalidURL as exc:
            raise InvalidSetting(str(exc)) from None
    with _cache_at(cache_dir) as store:
        if not urls:
            count = store.clear()
            click.echo(f"cleared {count} response{'' if count == 1 else 's'} from {store.folder}")
            return
        for url in dict.fromkeys(urls):
            count = store.remove([url])
            plural = "" if count == 1 else "s"
            click.echo(f"cleared {count} response{plural} of {url}")


if __name__ == "__main__":
    main()
