"""Tests of webclient/_https.py: https:// against nginx with a certificate made at run time."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from webclient import (
    CacheStatus,
    CertificateError,
    Client,
    ClientConfig,
    ClientConfigError,
    ClientRequest,
    ClientResponse,
    ConnectionClosed,
    InvalidURL,
    TransportError,
)
from webclient._cache import cache_key
from webclient._https import INSECURE_WARNING, wrap
from webclient._origin import OriginConnection
from webclient._wire import WireRequest
from webclient.cli import main
from webclient.client import split_url
from webserver import Server

from .conftest import CLIENT_TIMEOUT, BadServer, Certificates, FakeClock, Origin

pytestmark = pytest.mark.timeout(60)

Where = tuple[Server, Origin]


def _client(tmp_path: Path, **settings: object) -> Client:
    config = ClientConfig(cache_dir=tmp_path / "cache", timeout=CLIENT_TIMEOUT, **settings)  # type: ignore[arg-type]
    return Client(config)


def test_split_url_keeps_the_scheme_and_its_default_port() -> None:
    """https:// URLs default to port 443 and http:// ones to 80; the scheme is returned."""
    assert split_url("https://Example.org/a?b") == ("https", "example.org", 443, "/a?b")
    assert split_url("HTTP://example.org:8080/") == ("http", "example.org", 8080, "/")


def test_https_get_with_a_private_ca(
    tmp_path: Path, nginx_tls: int, certificates: Certificates, www: Path
) -> None:
    """With --cacert, the server's certificate verifies and the body arrives whole."""
    with _client(tmp_path, cacert=certificates.ca) as client:
        response = client.get(f"https://localhost:{nginx_tls}/data.bin")
    assert response.status == 200 and response.body == (www / "data.bin").read_bytes()


def test_split_url_encodes_the_query_too() -> None:
    """Characters a request target may not carry are percent-encoded in the query as in the
    path (UTF-8), so Client.get("http://h/a?q=\u00e9") sends a valid target."""
    assert split_url("http://h/\u00e9?q=\u00e9 x&r=%41")[3] == "/%C3%A9?q=%C3%A9%20x&r=%41"


def test_split_url_refuses_port_0() -> None:
    """Port 0 is no port to connect to: an InvalidURL, not the scheme's default port."""
    with pytest.raises(InvalidURL, match="port 0"):
        split_url("http://127.0.0.1:0/x")
    assert split_url("http://127.0.0.1:/x")[2] == 80  # an empty port is the default one


def test_https_keeps_the_connection_alive(
    tmp_path: Path, nginx_tls: int, certificates: Certificates
) -> None:
    """Requests made one after the other reuse the TLS connection (a TLS 1.3 session ticket
    waiting on the idle socket is not taken for the server closing it)."""
    with _client(tmp_path, cacert=certificates.ca, use_cache=False) as client:
        for _ in range(3):
            assert client.get(f"https://localhost:{nginx_tls}/hello.txt").status == 200
        assert client.connections_opened == 1


def test_https_pipelines_without_losing_buffered_responses(
    tmp_path: Path, nginx_tls: int, certificates: Certificates, www: Path
) -> None:
    """A pipelined window over TLS (responses bigger than one TLS record mixed with small ones)
    is read whole: bytes already decrypted in the TLS layer are never left waiting."""
    names = ["hello.txt", "data.bin", "sub/page.html"] * 20
    requests = [ClientRequest("GET", f"https://localhost:{nginx_tls}/{name}") for name in names]
    settings = {"use_cache": False, "pipeline": 16, "connections": 1}
    with _client(tmp_path, cacert=certificates.ca, **settings) as client:
        results = client.request_all(requests)
        assert client.connections_opened == 1
    for name, result in zip(names, results, strict=True):
        assert isinstance(result, ClientResponse), result
        assert result.body == (www / name).read_bytes()


def test_an_untrusted_certificate_is_one_clear_error(
    tmp_path: Path, nginx_tls: int, certificates: Certificates
) -> None:
    """A certificate from a CA not trusted fails with one line naming the cause and the fix."""
    with (
        _client(tmp_path, cacert=certificates.other_ca) as client,
        pytest.raises(CertificateError) as caught,
    ):
        client.get(f"https://localhost:{nginx_tls}/hello.txt")
    message = str(caught.value)
    assert "\n" not in message and "not trusted" in message and "--cacert" in message
    assert not isinstance(caught.value, TransportError)


def test_the_system_store_does_not_trust_a_private_ca(tmp_path: Path, nginx_tls: int) -> None:
    """Verification is on by default: without --cacert, the test CA is not trusted."""
    with _client(tmp_path) as client, pytest.raises(CertificateError):
        client.get(f"https://localhost:{nginx_tls}/hello.txt")


def test_a_host_name_mismatch_fails(
    tmp_path: Path, nginx_tls: int, certificates: Certificates
) -> None:
    """A certificate for localhost does not verify for 127.0.0.1 (the name is checked)."""
    with (
        _client(tmp_path, cacert=certificates.ca) as client,
        pytest.raises(CertificateError, match="is for another name: IP address mismatch"),
    ):
        client.get(f"https://127.0.0.1:{nginx_tls}/hello.txt")


def test_insecure_fetches_and_warns_once(
    tmp_path: Path, nginx_tls: int, certificates: Certificates
) -> None:
    """--insecure accepts any certificate and any name, and says so in one warning."""
    with _client(tmp_path, insecure=True, use_cache=False) as client:
        for host in ("127.0.0.1", "localhost"):
            assert client.get(f"https://{host}:{nginx_tls}/hello.txt").status == 200
        assert client.warnings == [INSECURE_WARNING]


def test_insecure_responses_are_not_stored(
    tmp_path: Path, nginx_tls: int, certificates: Certificates, www: Path
) -> None:
    """What came over unverified TLS (--insecure) is served but never stored, so it can never
    answer a later, verified run from the cache; a stored, verified response still serves an
    insecure run."""
    ten_days_ago = time.time() - 10 * 86400  # fresh for a day by the heuristic
    os.utime(www / "hello.txt", (ten_days_ago, ten_days_ago))
    url = f"https://localhost:{nginx_tls}/"
    for _ in range(2):
        with _client(tmp_path, insecure=True) as client:
            assert client.get(url + "hello.txt").cache_status is CacheStatus.MISS
    with _client(tmp_path, cacert=certificates.ca) as client:
        assert client.get(url + "hello.txt").cache_status is CacheStatus.MISS
        assert client.get(url + "hello.txt").cache_status is CacheStatus.HIT
    with _client(tmp_path, insecure=True) as client:
        assert client.get(url + "hello.txt").cache_status is CacheStatus.HIT
    later = FakeClock()
    later.advance(3 * 86400)  # stale: an unverified 304 must not make it fresh again
    config = ClientConfig(cache_dir=tmp_path / "cache", timeout=CLIENT_TIMEOUT, insecure=True)
    with Client(config, clock=later) as client:
        response = client.get(url + "hello.txt")
    assert response.cache_status is CacheStatus.MISS and response.body == b"hello, world\n"
    with _client(tmp_path, cacert=certificates.ca) as client:
        assert client.get(url + "hello.txt").cache_status is CacheStatus.HIT


def test_sni_carries_the_host_name(tmp_path: Path, certificates: Certificates) -> None:
    """The host name of the URL is sent as SNI in the handshake."""
    seen: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.cert, certificates.key)
    context.sni_callback = lambda sock, name, ctx: seen.append(name)
    server = BadServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", tls=context)
    with server, _client(tmp_path, cacert=certificates.ca, use_cache=False) as client:
        assert client.get(f"https://localhost:{server.port}/").body == b"ok"
    assert seen == ["localhost"]


class _AbruptTLS(BadServer):
    """A TLS BadServer that closes the TCP connection after its reply, without close_notify."""

    def _answer(self, conn: socket.socket, reply: bytes) -> None:
        assert self.tls is not None
        conn.settimeout(CLIENT_TIMEOUT)
        with contextlib.suppress(OSError):
            tls = self.tls.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and (data := tls.recv(65536)):
                head += data
            tls.sendall(reply)
            os.close(tls.detach())  # the TLS layer is dropped unclosed: no close_notify is sent
        conn.close()


@pytest.mark.parametrize(
    ("reply", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the close", b"to the close"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ncut", None),
    ],
)
def test_a_close_without_close_notify_is_a_close(
    tmp_path: Path, certificates: Certificates, reply: bytes, body: bytes | None
) -> None:
    """A TLS server that closes without close_notify has closed: a body delimited by the close
    ends there, a complete body stands, a body short of its Content-Length fails."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.cert, certificates.key)
    server = _AbruptTLS(reply, tls=context)
    settings = {"cacert": certificates.ca, "use_cache": False, "retries": 0}
    with server, _client(tmp_path, **settings) as client:
        if body is None:
            with pytest.raises(ConnectionClosed, match="closed the connection mid-response"):
                client.get(f"https://localhost:{server.port}/")
        else:
            assert client.get(f"https://localhost:{server.port}/").body == body


def test_an_https_url_to_a_plain_http_server_says_so(origin: Where, tmp_path: Path) -> None:
    """https:// to a server that answers in plain HTTP fails in one line that names the likely
    cause, not OpenSSL's WRONG_VERSION_NUMBER alone."""
    server, _ = origin
    port = server.listen()[1]
    with (
        _client(tmp_path, retries=0, use_cache=False) as client,
        pytest.raises(TransportError, match=r"did not answer in TLS \(a plain http:// server\?\)"),
    ):
        client.get(f"https://127.0.0.1:{port}/hello.txt")


class _Refusing:
    """A context whose handshake fails certificate verification with one code."""

    def __init__(self, code: int, message: str) -> None:
        self.error = ssl.SSLCertVerificationError(1, "certificate verify failed")
        self.error.verify_code, self.error.verify_message = code, message

    def wrap_socket(self, sock: socket.socket, server_hostname: str) -> ssl.SSLSocket:
        raise self.error


@pytest.mark.parametrize(
    ("code", "message", "hint"),
    [
        (20, "unable to get local issuer certificate", True),
        (18, "self-signed certificate", True),
        (10, "certificate has expired", False),
        (9, "certificate is not yet valid", False),
    ],
)
def test_the_cacert_hint_only_where_it_can_help(code: int, message: str, hint: bool) -> None:
    """An unknown issuer or a self-signed certificate hints at --cacert; an expired or not yet
    valid one does not: another CA file cannot fix the dates."""
    with socket.socket() as sock, pytest.raises(CertificateError) as caught:
        wrap(sock, _Refusing(code, message), "h", "h:443")  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert ("--cacert" in str(caught.value)) is hint


def test_a_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    """A CA file that is missing or not PEM fails with one sentence before any request."""
    with pytest.raises(ClientConfigError, match="no such CA file"):
        _client(tmp_path, cacert=tmp_path / "none.pem")
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    with pytest.raises(
        ClientConfigError, match=r"cannot use \S*bad\.pem as CA certificates"
    ) as bad:
        _client(tmp_path, cacert=tmp_path / "bad.pem")
    # OpenSSL's words, without its library tag and source line: "[X509: ...] ... (_ssl.c:4154)"
    assert str(bad.value).endswith(": no certificate or crl found (not a PEM file of certificates)")
    with pytest.raises(ClientConfigError, match="together"):
        ClientConfig(cacert=tmp_path / "x.pem", insecure=True)


def test_decrypted_bytes_count_as_buffered(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pipelined responses already decrypted by the TLS layer (read in pieces smaller than a
    TLS record) are seen as waiting, where select() on the socket would see nothing."""
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbc"
    monkeypatch.setattr("webclient._origin.CHUNK_SIZE", len(first))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificates.cert, certificates.key)
    client_context = ssl.create_default_context(cafile=str(certificates.ca))
    with BadServer(first + second, hang=True, tls=server_context) as server:
        conn = OriginConnection("localhost", server.port, timeout=2, tls=client_context)
        try:
            request = WireRequest("GET", "/x", [("Host", "localhost")])
            conn.send(request)
            conn.send(request)
            conn.receive_head(request)
            assert b"".join(conn.iter_body()) == b"a"
            assert conn.has_buffered() and conn.dropped()
            conn.receive_head(request)
            assert b"".join(conn.iter_body()) == b"bc"
            assert not conn.has_buffered()
        finally:
            conn.close()


def test_the_cache_keeps_schemes_apart() -> None:
    """http:// and https:// of one host and path are different cache entries (default ports
    written out)."""
    assert cache_key("https://H/x") == "https://h:443/x"
    assert cache_key("http://h/x") == "http://h:80/x"


def test_cache_clear_accepts_https_urls(tmp_path: Path) -> None:
    """webclient cache clear takes an https:// URL like an http:// one."""
    args = ["cache", "clear", "--cache-dir", str(tmp_path / "c"), "https://localhost/x"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "cleared 0 responses of https://localhost/x\n"
