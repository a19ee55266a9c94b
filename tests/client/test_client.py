"""Tests of webclient/client.py and webclient/_origin.py: the library API and its errors."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import webclient
from webclient import (
    CacheStatus,
    Client,
    ClientConfig,
    ConnectionRefused,
    ConnectTimeout,
    InvalidURL,
    LocalFileError,
    NotCached,
    ProtocolError,
    ReadTimeout,
    ResolveError,
    ResponseTooLarge,
    WebClientError,
)
from webserver import Server

from .conftest import (
    BROKEN,
    BROKEN_MAX_SIZE,
    BROKEN_TIMEOUT,
    CLIENT_TIMEOUT,
    COMPLETE,
    BadServer,
    Broken,
)

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
    assert plain.connections_opened == 1


def test_post_streams_a_file(
    static_server: Server, www: Path, tmp_path: Path, plain: Client
) -> None:
    """POST sends a local file with Content-Length; the server says where it stored it."""
    upload = tmp_path / "big.bin"
    upload.write_bytes(bytes(range(256)) * 8000)
    response = plain.post(static_server.url + "uploaded.bin", upload)
    assert response.status == 201
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


@pytest.mark.parametrize("host", ["a..b", "a" * 64 + ".test", "\udc80"])
def test_a_host_the_resolver_cannot_encode_is_a_resolve_error(plain: Client, host: str) -> None:
    """A host name IDNA cannot encode (an empty or 64-byte label, a lone surrogate), from the
    library or a redirect, is a ResolveError in one sentence, not a UnicodeError."""
    with pytest.raises(ResolveError, match="not a valid host name"):
        plain.get(f"http://{host}/x")


def cache_files(folder: Path) -> list[Path]:
    """Every body file and half-written body in a cache folder."""
    return sorted(
        p for name in ("bodies", "tmp") for p in (folder / name).rglob("*") if p.is_file()
    )


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Client]:
    """A caching client with the small limits of the broken-server cases."""
    config = ClientConfig(
        cache_dir=tmp_path / "cache", max_body_size=BROKEN_MAX_SIZE, timeout=BROKEN_TIMEOUT
    )
    with Client(config) as client:
        yield client


@pytest.mark.parametrize("case", BROKEN, ids=lambda case: case.name)
def test_broken_servers_fail_and_store_nothing(
    bad_server: Callable[..., BadServer], limited: Client, tmp_path: Path, case: Broken
) -> None:
    """Each broken answer is its own error with a clear message, and the cache stays empty."""
    server = bad_server(case.reply, hang=case.hang)
    with pytest.raises(case.error, match=case.message):
        limited.get(server.url + "x")
    info = limited.cache_info()
    assert info is not None and info.entries == 0
    assert cache_files(tmp_path / "cache") == []


def test_complete_answer_of_a_bad_server_is_stored(
    bad_server: Callable[..., BadServer], limited: Client, tmp_path: Path
) -> None:
    """The control case: the same cacheable fields with a whole body are stored."""
    server = bad_server(COMPLETE)
    assert limited.get(server.url + "x").body == b"ok"
    info = limited.cache_info()
    assert info is not None and info.entries == 1
    assert len(cache_files(tmp_path / "cache")) == 1


def test_body_at_the_limit_is_accepted(
    bad_server: Callable[..., BadServer], tmp_path: Path
) -> None:
    """A body of exactly max_body_size bytes arrives; one byte more is refused."""
    config = ClientConfig(use_cache=False, max_body_size=5, timeout=CLIENT_TIMEOUT)
    exact = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n12345"
    over = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n123456\r\n0\r\n\r\n"
    with Client(config) as client:
        assert client.get(bad_server(exact).url).body == b"12345"
        with pytest.raises(ResponseTooLarge, match="grew past the limit of 5 bytes"):
            client.get(bad_server(over).url)


def test_head_and_304_are_not_held_to_their_content_length(
    bad_server: Callable[..., BadServer],
) -> None:
    """Responses without a body (HEAD, 304) may announce any Content-Length."""
    config = ClientConfig(use_cache=False, max_body_size=10, timeout=CLIENT_TIMEOUT)
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"
    not_modified = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000000\r\n\r\n"
    with Client(config) as client:
        assert client.head(bad_server(big).url).header("content-length") == "1000000"
        assert client.get(bad_server(not_modified).url).status == 304


def test_unsendable_header_fails_alone(static_server: Server, plain: Client) -> None:
    """A header h11 will not serialise is a ProtocolError; the connection serves the next call."""
    with pytest.raises(ProtocolError, match="cannot send this request"):
        plain.get(static_server.url + "hello.txt", headers=[("X-Bad", "a\nb")])
    assert plain.get(static_server.url + "hello.txt").ok


_STATUS_LINES = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK", b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 100 Go"]
)
_FIELDS = st.sampled_from(
    [
        b"Content-Length: 3",
        b"Content-Length: 99999",
        b"Content-Length: -1",
        b"Transfer-Encoding: chunked",
        b"Connection: close",
        b"Cache-Control: max-age=60",
        b'ETag: "x"',
        b"Vary: *",
    ]
)


@st.composite
def _responses(draw: st.DrawFn) -> bytes:
    """Near-valid responses, cut at a random point, or plain noise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=120))
    fields = draw(st.lists(_FIELDS, max_size=4))
    body = draw(st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"x" * 300]))
    whole = draw(_STATUS_LINES) + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body
    return whole[: draw(st.integers(0, len(whole)))] if draw(st.booleans()) else whole


@settings(max_examples=40)
@given(reply=_responses())
def test_any_answer_is_a_response_or_a_client_error(reply: bytes) -> None:
    """Any reply gives a ClientResponse or a WebClientError; a failure stores nothing."""
    with tempfile.TemporaryDirectory() as folder, BadServer(reply) as server:
        config = ClientConfig(
            cache_dir=Path(folder), max_body_size=200, timeout=BROKEN_TIMEOUT, retries=0
        )
        with Client(config) as client:
            try:
                client.get(server.url + "x")
            except WebClientError:
                info = client.cache_info()
                assert info is not None and info.entries == 0
                assert cache_files(Path(folder)) == []
        assert list((Path(folder) / "tmp").iterdir()) == []


def test_invalid_urls_and_missing_files(plain: Client, tmp_path: Path) -> None:
    """Non-http(s) URLs and missing upload files fail before any connection."""
    with pytest.raises(InvalidURL, match="only http:// and https://"):
        plain.get("ftp://127.0.0.1/")
    with pytest.raises(InvalidURL, match="no host"):
        plain.get("http:///path")
    with pytest.raises(LocalFileError, match="no such file"):
        plain.post("http://127.0.0.1:9/x", tmp_path / "missing.bin")
    assert plain.connections_opened == 0


@pytest.mark.timeout(10)
def test_uploading_a_pipe_or_device_is_refused(plain: Client, tmp_path: Path) -> None:
    """A named pipe or a device has no length to send as Content-Length: refused at once (a
    pipe without a writer is never waited on, one with a writer never sent as an empty body)."""
    os.mkfifo(tmp_path / "pipe")
    for special in (tmp_path / "pipe", Path(os.devnull)):
        with pytest.raises(LocalFileError, match="not a regular file"):
            plain.post("http://127.0.0.1:9/x", special)


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
        assert client.cache_info() is None
        assert client.get(static_server.url + "hello.txt").ok
    assert "without the cache" in warnings[0]


def test_public_api_exports() -> None:
    """The package exports its API and keeps its version."""
    assert webclient.__version__ == "0.1.0"
    assert set(webclient.__all__) <= set(dir(webclient))
    assert issubclass(webclient.ConnectionRefused, webclient.TransportError)
    assert issubclass(webclient.TransportError, webclient.WebClientError)


def test_public_surface_is_deliberate() -> None:
    """__all__ holds the library's API only; the machinery stays in underscore modules."""
    assert set(webclient.__all__) == {
        *("BodySink", "CacheInfo", "CacheStatus", "Client", "ClientConfig", "ClientRequest"),
        *("ClientResponse", "Command", "LineError", "parse_commands", "read_command_file"),
        *("default_cache_dir", "parse_size", "__version__", "WebClientError", "ClientConfigError"),
        *("InvalidURL", "CommandFileError", "TransportError", "ResolveError"),
        *("ConnectionRefused", "ConnectTimeout", "ReadTimeout", "ConnectionClosed"),
        *("ProtocolError", "ResponseTooLarge", "CacheError", "LocalFileError", "UnsafePathError"),
        "NotCached",
        *("CertificateError", "RedirectError", "ResponseTimeout"),
    }
    assert issubclass(webclient.ResponseTooLarge, webclient.WebClientError)


def test_offline_answers_from_the_cache_or_raises_not_cached(
    static_server: Server, cache_dir: Path
) -> None:
    """ClientConfig(offline=True) serves a stored response without connecting, and raises
    NotCached for a URL not stored and for a POST (nothing is sent)."""
    port = static_server.listen()[1]
    url = f"http://127.0.0.1:{port}/hello.txt"
    with Client(ClientConfig(cache_dir=cache_dir, timeout=CLIENT_TIMEOUT)) as online:
        assert online.get(url).cache_status is CacheStatus.MISS
    config = ClientConfig(cache_dir=cache_dir, timeout=CLIENT_TIMEOUT, offline=True)
    with Client(config) as offline:
        served = offline.get(url)
        assert served.body == b"hello, world\n"
        assert served.cache_status in (CacheStatus.HIT, CacheStatus.STALE)
        with pytest.raises(NotCached, match="not in the cache"):
            offline.get(url.replace("hello", "other"))
        with pytest.raises(NotCached, match="not sent"):
            offline.post(url, b"data")
        assert offline.connections_opened == 0
