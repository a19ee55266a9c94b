"""Helpers for testing code that serves or talks HTTP: run a :class:`Server` in a thread.

::

    from webserver.testing import running_server

    def test_hello(tmp_path):
        with running_server(root=tmp_path, port=0) as server:
            urllib.request.urlopen(server.url + "hello")

The server is listening before the ``with`` body runs (no sleeping, no polling), and is shut down
and joined when it ends, even if the body raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .config import ServerConfig
from .server import Server

#: Seconds to wait for the serving thread to finish after shutdown before reporting a hang.
JOIN_TIMEOUT = 30.0


@contextmanager
def running_server(
    config: ServerConfig | None = None,
    *,
    setup: Callable[[Server], None] | None = None,
    server: Server | None = None,
    **settings: object,
) -> Iterator[Server]:
    """Serve in a background thread for the duration of the ``with`` block; yields the server.

    Pass a ``ServerConfig``, keyword settings (``port`` defaults to 0 here), or a ready ``server``;
    ``setup`` is called with the server before it starts, e.g. to add routes.
    """
    if server is None:
        if config is None:
            settings.setdefault("port", 0)
            config = ServerConfig(**settings)  # type: ignore[arg-type]
        server = Server(config)
    if setup is not None:
        setup(server)
    server.listen()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.serve_forever()
        except BaseException as exc:  # pragma: no cover - reported below
            failure.append(exc)

    thread = threading.Thread(target=run, name="webserver-test-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(JOIN_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("the server did not stop within the join timeout")
        if failure:
            raise failure[0]
