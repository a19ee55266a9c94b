"""webclient: batch HTTP/1.x downloads and uploads with a persistent RFC 9111 cache.

Use it from Python::

    from webclient import Client, ClientConfig

    with Client(ClientConfig(cache_dir="cache")) as client:
        response = client.get("http://127.0.0.1:8080/index.html")
        print(response.status, response.cache_status.value, len(response.body or b""))

or run command files with ``webclient batch commands.txt``.
"""

__version__ = "0.1.0"

from .batch import BatchRun, Outcome, OutputFile, Summary
from .cache import Cache, CacheStatus, Lookup
from .client import BodySink, Client, Request, Response
from .commands import Command, InvalidLine, parse_commands, parse_line, read_command_file
from .config import ClientConfig, default_cache_dir, parse_size
from .connection import Connection, ResponseHead, WireRequest
from .errors import (
    CacheError,
    CommandFileError,
    ConfigError,
    ConnectionClosed,
    ConnectionRefused,
    ConnectTimeout,
    InvalidURL,
    LineError,
    LocalFileError,
    ProtocolError,
    ReadTimeout,
    ResolveError,
    TransportError,
    UnsafePathError,
    WebClientError,
)
from .pipeline import Exchange, Lane
from .pool import ConnectionPool
from .storage import BodyWriter, Entry, Storage, StorageInfo

__all__ = [
    "BatchRun",
    "BodySink",
    "BodyWriter",
    "Cache",
    "CacheError",
    "CacheStatus",
    "Client",
    "ClientConfig",
    "Command",
    "CommandFileError",
    "ConfigError",
    "ConnectTimeout",
    "Connection",
    "ConnectionClosed",
    "ConnectionPool",
    "ConnectionRefused",
    "Entry",
    "Exchange",
    "InvalidLine",
    "InvalidURL",
    "Lane",
    "LineError",
    "LocalFileError",
    "Lookup",
    "Outcome",
    "OutputFile",
    "ProtocolError",
    "ReadTimeout",
    "Request",
    "ResolveError",
    "Response",
    "ResponseHead",
    "Storage",
    "StorageInfo",
    "Summary",
    "TransportError",
    "UnsafePathError",
    "WebClientError",
    "WireRequest",
    "__version__",
    "default_cache_dir",
    "parse_commands",
    "parse_line",
    "parse_size",
    "read_command_file",
]
