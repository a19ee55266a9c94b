"""webserver: a threaded HTTP/1.0 and HTTP/1.1 file server built on h11.

Serve files with ``webserver run``, or build a small service::

    from webserver import Server, Handler, Response

    class Hello(Handler):
        def get(self, request):
            return Response.text("hello\\n")

    server = Server(root="www")
    server.route("/hello", Hello)
    server.serve_forever()
"""

from webclient._shared import VERSION as __version__

from .config import ServerConfig, TCPAddress, UnixAddress, parse_bind, parse_size
from .errors import (
    BadRequest,
    ClientDisconnected,
    ConfigError,
    HTTPError,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RequestTimeout,
    WebServerError,
)
from .framing import HeadLimits
from .handler import Handler
from .headers import Headers
from .listing import ListingEntry
from .mounting import Mount, MountError
from .multipart import MultipartError, MultipartParser, PartData, PartEnd, PartStart
from .proxy import Health
from .request import Request, RequestBody
from .response import Response
from .router import Router
from .server import Server
from .static import StaticFiles
from .uploads import Uploads
from .workers import Supervisor
from .wsgi import FileWrapper, WSGIHandler

__all__ = [
    "BadRequest",
    "ClientDisconnected",
    "ConfigError",
    "FileWrapper",
    "HTTPError",
    "Handler",
    "HeadLimits",
    "Headers",
    "Health",
    "ListingEntry",
    "Mount",
    "MountError",
    "MultipartError",
    "MultipartParser",
    "NotFound",
    "PartData",
    "PartEnd",
    "PartStart",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "Request",
    "RequestBody",
    "RequestTimeout",
    "Response",
    "Router",
    "Server",
    "ServerConfig",
    "StaticFiles",
    "Supervisor",
    "TCPAddress",
    "UnixAddress",
    "Uploads",
    "WSGIHandler",
    "WebServerError",
    "__version__",
    "parse_bind",
    "parse_size",
]
