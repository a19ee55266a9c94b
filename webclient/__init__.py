"""webclient: batch HTTP/1.x downloads and uploads with a persistent RFC 9111 cache.

Use it from Python::

    from webclient import Client, ClientConfig

    with Client(ClientConfig(cache_dir="cache")) as client:
        response = client.get("http://127.0.0.1:8080/index.html")
        print(response.status, response.cache_status.value, len(response.body or b""))

or run command files with ``webclient batch commands.txt``.

The public API is what ``__all__`` lists. Modules whose names start with an underscore (the
connection, pipelining, cache and batch machinery) are internal and may change at any time.
"""

from typing import TYPE_CHECKING, Any

from ._shared import VERSION as __version__

if TYPE_CHECKING:
    from ._models import BodySink, ClientRequest, ClientResponse
    from ._status import CacheStatus
    from ._storage import CacheInfo
    from .client import Client
    from .commands import Command, parse_commands, read_command_file
    from .config import ClientConfig, default_cache_dir, parse_size
    from .errors import (
        CacheError,
        CertificateError,
        ClientConfigError,
        CommandFileError,
        ConnectionClosed,
        ConnectionRefused,
        ConnectTimeout,
        InvalidURL,
        LineError,
        LocalFileError,
        NotCached,
        ProtocolError,
        ReadTimeout,
        RedirectError,
        ResolveError,
        ResponseTimeout,
        ResponseTooLarge,
        TransportError,
        UnsafePathError,
        WebClientError,
    )

#: Where each public name is defined: modules are imported when a name is first used, so that
#: ``webclient batch --no-cache`` never loads the cache's SQLite and hashing code.
_HOMES = {
    "CacheStatus": "_status",
    "CacheInfo": "_storage",
    "BodySink": "_models",
    "Client": "client",
    "ClientRequest": "_models",
    "ClientResponse": "_models",
    "Command": "commands",
    "parse_commands": "commands",
    "read_command_file": "commands",
    "ClientConfig": "config",
    "default_cache_dir": "config",
    "parse_size": "config",
    **dict.fromkeys(
        (
            "CacheError",
            "CertificateError",
            "CommandFileError",
            "ClientConfigError",
            "ConnectionClosed",
            "ConnectionRefused",
            "ConnectTimeout",
            "InvalidURL",
            "LineError",
            "LocalFileError",
            "NotCached",
            "ProtocolError",
            "ReadTimeout",
            "RedirectError",
            "ResolveError",
            "ResponseTimeout",
            "ResponseTooLarge",
            "TransportError",
            "UnsafePathError",
            "WebClientError",
        ),
        "errors",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'webclient' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "BodySink",
    "CacheError",
    "CacheInfo",
    "CacheStatus",
    "CertificateError",
    "Client",
    "ClientConfig",
    "ClientConfigError",
    "ClientRequest",
    "ClientResponse",
    "Command",
    "CommandFileError",
    "ConnectTimeout",
    "ConnectionClosed",
    "ConnectionRefused",
    "InvalidURL",
    "LineError",
    "LocalFileError",
    "NotCached",
    "ProtocolError",
    "ReadTimeout",
    "RedirectError",
    "ResolveError",
    "ResponseTimeout",
    "ResponseTooLarge",
    "TransportError",
    "UnsafePathError",
    "WebClientError",
    "__version__",
    "default_cache_dir",
    "parse_commands",
    "parse_size",
    "read_command_file",
]
