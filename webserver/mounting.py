"""Your code on the command line: Handler classes, installed handler plugins, WSGI applications.

Rules: a mount is ``[/prefix=]target``, the prefix ``/`` when left out. A target is
``module:attribute`` (the attribute may be dotted), or, for a handler, the name of an entry point
in the ``webserver.handlers`` group. Everything is imported and checked before the server
listens, with the current folder importable as it is for ``python -m``; any failure -- a missing
module, an error while importing it, an object of the wrong kind -- is one :class:`MountError`
sentence. Code mounted at ``/`` replaces the built-in file and upload handlers.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from .config import ServerConfig
from .errors import ConfigError
from .handler import Handler
from .server import Server
from .wsgi import WSGIHandler

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

#: The entry-point group packages register handler classes under, in their ``pyproject.toml``::
#:
#:     [project.entry-points."webserver.handlers"]
#:     reports = "mypkg.reports:Reports"
ENTRY_POINT_GROUP = "webserver.handlers"


class MountError(ConfigError):
    """Code named on the command line cannot be mounted."""


@dataclass(frozen=True, slots=True)
class Mount:
    """A handler, built and checked, and the prefix it answers under."""

    prefix: str
    handler: Handler


def split_spec(spec: str) -> tuple[str, str]:
    """``/api=mypkg.api:Api`` as ``("/api", "mypkg.api:Api")``; the prefix defaults to ``/``."""
    prefix, equals, target = spec.partition("=")
    if not equals:
        prefix, target = "/", spec
    if not prefix.startswith("/"):
        raise MountError(f"a mount prefix starts with '/': {spec!r}")
    if not target:
        raise MountError(f"nothing to mount in {spec!r}")
    return prefix.rstrip("/") or "/", target


def load_object(target: str) -> object:
    """The object ``module:attribute`` names, imported from the current folder too."""
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise MountError(f"expected module:attribute, not {target!r}")
    folder = os.getcwd()
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        found: object = importlib.import_module(module_name)
    except Exception as exc:  # whatever the module raises while importing, told in one line
        raise MountError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    for name in attribute.split("."):
        try:
            found = getattr(found, name)
        except AttributeError:
            raise MountError(f"{module_name} has no attribute {attribute}") from None
    return found


def handler_plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed handler plugins by name (the ``webserver.handlers`` entry-point group)."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {entry.name: entry for entry in sorted(found, key=lambda entry: entry.name)}


def _load_plugin(name: str) -> object:
    entry = handler_plugins().get(name)
    if entry is None:
        raise MountError(
            f"no handler plugin named {name!r} (see `webserver handlers`; or give module:Class)"
        )
    try:
        return entry.load()
    except Exception as exc:
        raise MountError(
            f"cannot load handler plugin {name} ({entry.value}): {type(exc).__name__}: {exc}"
        ) from None


def load_handler(spec: str, config: ServerConfig) -> Mount:
    """A ``--handler`` value: a Handler subclass by ``module:Class`` or plugin name, built with
    its ``from_config`` (once, so a failure is reported before anything listens)."""
    prefix, target = split_spec(spec)
    found = load_object(target) if ":" in target else _load_plugin(target)
    if not (isinstance(found, type) and issubclass(found, Handler)):
        raise MountError(f"{target} is not a webserver.Handler subclass: {found!r:.80}")
    try:
        return Mount(prefix, found.from_config(config))
    except Exception as exc:
        raise MountError(f"{target} failed to start: {type(exc).__name__}: {exc}") from None


def load_app(spec: str, config: ServerConfig, *, multiprocess: bool = False) -> Mount:
    """An ``--app`` value: any WSGI application callable by ``module:callable``."""
    prefix, target = split_spec(spec)
    found = load_object(target)
    if not callable(found):
        raise MountError(f"{target} is not a WSGI application (not callable): {found!r:.80}")
    app = cast("WSGIApplication", found)
    handler = WSGIHandler(
        app,
        prefix=prefix,
        max_upload=config.max_upload,
        multiprocess=multiprocess,
        server_address=(config.host, config.port),
    )
    return Mount(prefix, handler)


def check_mounts(mounts: list[Mount]) -> None:
    """Refuse two mounts at one prefix: which one answers would depend on the order given."""
    seen: set[str] = set()
    for mount in mounts:
        if mount.prefix in seen:
            raise MountError(f"two mounts at {mount.prefix}")
        seen.add(mount.prefix)


def replaces_defaults(mounts: list[Mount]) -> bool:
    """Code mounted at ``/`` answers everything the built-in handlers would have."""
    return any(mount.prefix == "/" for mount in mounts)


def apply_mounts(server: Server, mounts: list[Mount]) -> None:
    """Route every mount on ``server`` as a prefix route."""
    for mount in mounts:
        server.route(mount.prefix, mount.handler, prefix=True)
