"""Tests of webclient/client.py and webclient/connection.py: the library API and its errors."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import webclient
from webclient import (
    CacheStatus,
    Client,
    ClientConfig,
    ConnectionClosed,
    ConnectionRefused,
    ConnectTimeout,
    InvalidURL,
    LocalFileError,
    ProtocolError,
    ReadTimeout,
    ResolveError,
    WebClientError,
)
from webserver import Server

from .conftest import CLIENT_TIMEOUT

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Client]:
    """A client without a cache."""
    with Client(ClientConfig(use_cache=False, timeout=CLIENT_TIMEOUT)) as client:
        yield client


def test_get_is_byte_exact(static_server: Server, www: Path, plain: Client) -> None:
    """GET returns the file's exact bytes and headers; no cache means BYPASS."""
    response = plain.get(static_server.url + "data.bin")
    assert response.ok
    assert response.body == (www / "data.bin").read_bytes()
    assert response.body_size == response.bytes_received == (www / "data.bin").stat().st_size
    assert response.header("ETag")
    assert response.cache_status is CacheStatus.BYPASS


def test_head_has_no_body(static_server: Server, plain: Client) -> None:
    """HEAD reads headers only, and the connection stays usable for the next request."""
    head = plain.head(static_server.url + "hello.txt")
    assert head.header("content-length") == "13"
    assert head.body == b""
    assert plain.get(static_server.url + "hello.txt").body == b"hello, world\n"
    assert plain.pool.opened == 1


def test_post_streams_a_file(
    static_server: Server, www: Path, tmp_path: Path, plain: Client
) -> None:
    """POST sends a local file with Content-Length; the server says where it stored it."""
    upload = tmp_path / "big.bin"
    upload.write_bytes(bytes(range(256)) * 8000)
    response = plain.post(static_server.url + "uploaded.bin", upload)
    assert response.status == 200
    assert response.header("location") == "/uploaded.bin"
    assert response.bytes_sent == upload.stat().st_size
    assert (www / "uploaded.bin").read_bytes() == upload.read_bytes()
    again = plain.post(static_server.url + "uploaded.bin", b"second")
    assert again.header("location") == "/uploaded-1.bin"


def test_sink_receives_the_body(static_server: Server, www: Path, plain: Client) -> None:
    """A sink gets every byte and is closed; the response then holds no body."""

    class Sink:
        def __init__(self) -> None:
            self.data = b""
            self.closed = False

        def write(self, data: bytes) -> None:
            self.data += data

        def close(self) -> None:
            self.closed = True

        def abort(self) -> None:
            raise AssertionError("not aborted")

    sink = Sink()
    response = plain.get(static_server.url + "data.bin", sink=lambda r: sink)
    assert response.body is None
    assert sink.closed
    assert sink.data == (www / "data.bin").read_bytes()


def test_connection_refused(refused_port: int, plain: Client) -> None:
    """Nothing listening is ConnectionRefused, a TransportError."""
    with pytest.raises(ConnectionRefused, match="connection refused"):
        plain.get(f"http://127.0.0.1:{refused_port}/x")


def test_read_timeout_against_a_silent_server(silent_port: int) -> None:
    """A server that accepts but never answers fails with ReadTimeout after the timeout."""
    with (
        Client(ClientConfig(use_cache=False, timeout=0.3)) as client,
        pytest.raises(ReadTimeout, match=r"within 0\.3 s"),
    ):
        client.get(f"http://127.0.0.1:{silent_port}/x")


def test_dns_failure_and_connect_timeout_are_wrapped(
    plain: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolver errors and connect timeouts become ResolveError and ConnectTimeout."""

    def unresolvable(*args: object, **kwargs: object) -> socket.socket:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unresolvable)
    with pytest.raises(ResolveError, match=r"cannot resolve host 'nowhere\.test'") as info:
        plain.get("http://nowhere.test/x")
    assert isinstance(info.value.__cause__, socket.gaierror)

    def slow(*args: object, **kwargs: object) -> socket.socket:
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", slow)
    with pytest.raises(ConnectTimeout, match="no connection"):
        plain.get("http://127.0.0.1:9/x")


def _one_shot_server(reply: bytes) -> tuple[int, threading.Thread, socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            conn.recv(65536)
            conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return int(listener.getsockname()[1]), thread, listener


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (b"SPDY/9 banana\r\n\r\n", ProtocolError, "invalid response"),
        (b"", ConnectionClosed, "without answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", ConnectionClosed, "mid-response"),
    ],
)
def test_broken_servers(
    plain: Client, reply: bytes, error: type[WebClientError], message: str
) -> None:
    """Garbage, silence and a truncated body are each reported as their own error."""
    port, thread, listener = _one_shot_server(reply)
    with listener, pytest.raises(error, match=message):
        plain.get(f"http://127.0.0.1:{port}/x")
    thread.join(10)


def test_invalid_urls_and_missing_files(plain: Client, tmp_path: Path) -> None:
    """Non-http URLs and missing upload files fail before any connection."""
    with pytest.raises(InvalidURL, match="only http"):
        plain.get("https://127.0.0.1/")
    with pytest.raises(InvalidURL, match="no host"):
        plain.get("http:///path")
    with pytest.raises(LocalFileError, match="no such file"):
        plain.post("http://127.0.0.1:9/x", tmp_path / "missing.bin")
    assert plain.pool.opened == 0


def test_corrupt_cache_is_rebuilt_with_a_warning(static_server: Server, tmp_path: Path) -> None:
    """A damaged index is reported through ``warn`` and replaced; requests still work."""
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "index.sqlite3").write_bytes(b"garbage" * 500)
    warnings: list[str] = []
    config = ClientConfig(cache_dir=folder, timeout=CLIENT_TIMEOUT)
    with Client(config, warn=warnings.append) as client:
        assert client.get(static_server.url + "hello.txt").cache_status is CacheStatus.MISS
    assert any("rebuilding" in w for w in warnings)


def test_unusable_cache_folder_means_no_cache(static_server: Server, tmp_path: Path) -> None:
    """A cache path that is a file disables the cache with a warning instead of failing."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    warnings: list[str] = []
    with Client(ClientConfig(cache_dir=blocker), warn=warnings.append) as client:
        assert client.cache is None
        assert client.get(static_server.url + "hello.txt").ok
    assert "without the cache" in warnings[0]


def test_public_api_exports() -> None:
    """The package exports its API and keeps its version."""
    assert webclient.__version__ == "0.1.0"
    assert set(webclient.__all__) <= set(dir(webclient))
    assert issubclass(webclient.ConnectionRefused, webclient.TransportError)
    assert issubclass(webclient.TransportError, webclient.WebClientError)
