"""The ``webclient`` command: a thin layer of options and messages over the library.

Rules: every failure the user can cause ends with one line on stderr and an exit status, never
a traceback (``batch``: 0 when every command succeeded, 1 when any failed, 2 for an invalid command
file or invalid options); settings are validated by :class:`~webclient.ClientConfig`, not here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .batch import BatchRun, human_size
from .cache import Cache
from .client import Client
from .commands import read_command_file
from .config import ClientConfig, default_cache_dir, parse_size
from .errors import CacheError, CommandFileError, ConfigError


class InvalidCommandFile(click.ClickException):
    """Exit status 2, and every invalid line on its own line."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        click.echo(self.message, err=True)


class CacheUnavailable(click.ClickException):
    exit_code = 1


class InvalidSetting(click.UsageError):
    pass


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _stderr_warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group()
@click.version_option(__version__, prog_name="webclient")
def main() -> None:
    """Fetch and upload files in batches over HTTP/1.x, with a persistent cache."""


@main.command()
@click.argument("command_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default="current folder",
    help="Folder where GET bodies are saved.",
)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Cache folder.")
@click.option("--no-cache", is_flag=True, help="Neither use nor fill the cache.")
@click.option(
    "--cache-max-size",
    default="1G",
    show_default=True,
    callback=_size,
    help="Cache size limit (K, M, G suffixes).",
)
@click.option(
    "--pipeline",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="GET requests written ahead of their responses on one connection.",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Hosts served at the same time.",
)
@click.option("--quiet", "-q", is_flag=True, help="Report failures only; no summary.")
@click.option("--no-print", is_flag=True, help="Do not show bodies on stdout.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a connection or for the server.",
)
def batch(
    command_file: Path,
    out_dir: Path,
    cache_dir: Path | None,
    no_cache: bool,
    cache_max_size: int,
    pipeline: int,
    parallel: int,
    quiet: bool,
    no_print: bool,
    timeout: float,
) -> None:
    """Run the GET and POST commands of COMMAND_FILE (see docs/client.md for the format)."""
    if no_cache and cache_dir is not None:
        raise InvalidSetting("--cache-dir and --no-cache cannot be used together")
    try:
        commands = read_command_file(command_file)
    except CommandFileError as exc:
        raise InvalidCommandFile(str(exc)) from None
    try:
        config = ClientConfig(
            use_cache=not no_cache,
            cache_dir=cache_dir,
            cache_max_size=cache_max_size,
            timeout=timeout,
            pipeline=pipeline,
        )
    except ConfigError as exc:
        raise InvalidSetting(str(exc)) from None
    stdout = sys.stdout.buffer
    stderr = sys.stderr
    with Client(config, warn=_stderr_warn) as client:
        run = BatchRun(
            client,
            commands,
            out_dir=out_dir,
            stdout=stdout,
            stderr=stderr,
            print_bodies=not no_print,
            quiet=quiet,
            parallel=parallel,
            progress=stderr.isatty(),
            stdout_is_tty=stdout.isatty(),
        )
        summary = run.run()
    if summary.failed:
        raise click.exceptions.Exit(1)


@main.group()
def cache() -> None:
    """Look at or empty the response cache."""


def _open_cache(cache_dir: Path | None) -> Cache:
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    try:
        return Cache(folder, max_size=0, warn=_stderr_warn)
    except CacheError as exc:
        raise CacheUnavailable(str(exc)) from None


_cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Cache folder (default: $WEBCLIENT_CACHE_DIR, else $XDG_CACHE_HOME/webclient).",
)


@cache.command("info")
@_cache_dir_option
def cache_info(cache_dir: Path | None) -> None:
    """Where the cache is and how much it holds."""
    store = _open_cache(cache_dir)
    try:
        info = store.info()
    except CacheError as exc:
        raise CacheUnavailable(str(exc)) from None
    finally:
        store.close()
    click.echo(f"folder: {info.folder}")
    click.echo(f"responses: {info.entries}")
    click.echo(f"bodies: {info.bodies}")
    click.echo(f"size: {human_size(info.size)} ({info.size} bytes)")


@cache.command("clear")
@_cache_dir_option
def cache_clear(cache_dir: Path | None) -> None:
    """Delete every stored response."""
    store = _open_cache(cache_dir)
    try:
        count = store.clear()
    except CacheError as exc:
        raise CacheUnavailable(str(exc)) from None
    finally:
        store.close()
    click.echo(f"cleared {count} responses from {store.folder}")
