"""TLS (webserver/_tls.py): the context, the handshake stepped by the selector, files over TLS,
and the CLI's one-line errors; real curl and Python's ssl as peers.

Certificates are made at run time with the ``openssl`` command (the tests skip without it).
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import os
import shutil
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from webserver import ConfigError, Server, ServerConfig
from webserver._connection import Owner
from webserver._tls import ALPN_PROTOCOLS, build_context
from webserver.testing import running_server

from .conftest import NET_TIMEOUT, connect, open_fds, recv_until_closed, wait_for_owner
from .wire import WireReader

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")

GET = b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
#: The password of the test's encrypted key (made at run time, for these tests only).
KEY_PASSWORD = "secret"  # noqa: S105


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for localhost, 127.0.0.1 and ::1, and the files around it."""

    cert: Path
    key: Path
    #: The same key, encrypted with KEY_PASSWORD.
    encrypted_key: Path
    #: Another certificate's key (it matches nothing here).
    other_key: Path
    #: Certificate and key in one file.
    combined: Path


def _openssl(*args: str) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


def make_certificate(folder: Path) -> Certificate:
    """Generate a certificate with the openssl command (as the docs tell users to)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key, other_key = folder / "cert.pem", folder / "key.pem", folder / "other-key.pem"
    names = "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
    for crt, k in ((cert, key), (folder / "other-cert.pem", other_key)):
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(k), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
            "-addext", names,
        )  # fmt: skip
    encrypted = folder / "encrypted-key.pem"
    _openssl(
        "pkey",
        "-in",
        str(key),
        "-aes256",
        "-passout",
        f"pass:{KEY_PASSWORD}",
        "-out",
        str(encrypted),
    )
    combined = folder / "combined.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    return Certificate(cert, key, encrypted, other_key, combined)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    if OPENSSL is None:
        pytest.skip("the openssl command is not installed")
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(www: Path, certificate: Certificate) -> Iterator[Server]:
    with running_server(
        root=www, certfile=certificate.cert, keyfile=certificate.key, access_log=False
    ) as server:
        yield server


@pytest.fixture
def error_log() -> Iterator[list[logging.LogRecord]]:
    """What the server writes to its error log meanwhile (whatever else a test session has
    configured for that logger)."""
    handler = _Records()
    logger = logging.getLogger("webserver.error")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def client_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certificate.cert))
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def tls_connect(server: Server, certificate: Certificate) -> ssl.SSLSocket:
    """A TLS client socket to ``server`` (handshake done) with the test timeout. An end of the
    stream without close_notify (a truncation, as far as TLS can tell) raises SSLEOFError."""
    return client_context(certificate).wrap_socket(
        connect(server), server_hostname="localhost", suppress_ragged_eofs=False
    )


def client_hello(certificate: Certificate) -> bytes:
    """The first flight of a TLS client, as bytes to send on a plain socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(certificate).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return subprocess.run(
        [CURL, "--silent", "--show-error", "--max-time", str(NET_TIMEOUT), *args],
        capture_output=True,
        timeout=NET_TIMEOUT * 2,
        check=False,
    )


# -- real clients ---------------------------------------------------------------------------------


@needs_curl
def test_curl_get_head_post_and_range(tls_server: Server, certificate: Certificate) -> None:
    """curl --cacert verifies the certificate and gets GET, HEAD, a range and an upload right."""
    url = tls_server.url.replace("127.0.0.1", "localhost")
    assert url.startswith("https://localhost:")
    ca = ("--cacert", str(certificate.cert))
    got = curl(*ca, f"{url}hello.txt")
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"hello, world\n"
    head = curl(*ca, "--head", f"{url}hello.txt")
    assert head.stdout.startswith(b"HTTP/1.1 200") and b"content-length: 13" in head.stdout.lower()
    ranged = curl(*ca, "--range", "7-11", f"{url}hello.txt")
    assert ranged.stdout == b"world"
    posted = curl(*ca, "--data-binary", "uploaded", "-w", "%{http_code}", f"{url}new.txt")
    assert posted.stdout.endswith(b"201"), posted
    assert (tls_server.config.root / "new.txt").read_bytes() == b"uploaded"
    version = curl(*ca, "-o", "/dev/null", "-w", "%{http_version}", f"{url}hello.txt")
    assert version.stdout == b"1.1"  # curl offers h2 in ALPN; the server picks http/1.1


def test_http_client_with_an_ssl_context(tls_server: Server, certificate: Certificate) -> None:
    """http.client's HTTPSConnection, verifying against the certificate, keeps one connection
    for several requests."""
    port = tls_server.listen()[1]
    conn = http.client.HTTPSConnection(
        "localhost", port, timeout=NET_TIMEOUT, context=client_context(certificate)
    )
    try:
        for _ in range(3):
            conn.request("GET", "/hello.txt")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"hello, world\n")
        assert conn.sock is not None
        assert conn.sock.selected_alpn_protocol() == "http/1.1"
    finally:
        conn.close()


def test_keep_alive_and_pipelining(tls_server: Server, certificate: Certificate) -> None:
    """Three requests in one TLS write are answered in order, and the connection stays open."""
    with tls_connect(tls_server, certificate) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + GET)
        reader = WireReader(sock)
        for _ in range(3):
            assert reader.read().body == b"hello, world\n"
        sock.sendall(b"HEAD /data.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.read(head_only=True).header("content-length") == "16384"
        sock.sendall(b"GET /data.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reader.read().body == bytes(range(256)) * 64
        assert reader.at_eof()  # the server said close_notify before closing


def test_large_file_is_byte_exact_to_a_slow_reader(
    www: Path, certificate: Certificate, tmp_path: Path
) -> None:
    """A file far larger than the socket buffers goes out byte-exact over TLS, also when the
    client stops reading until the server has parked the connection waiting to send (a send
    OpenSSL refused for want of room, retried later)."""
    body = os.urandom(8 * 1024 * 1024 + 123)
    (www / "big.bin").write_bytes(body)
    with (
        running_server(
            root=www, certfile=certificate.cert, keyfile=certificate.key, access_log=False
        ) as server,
        tls_connect(server, certificate) as sock,
    ):
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for_owner(server, Owner.SEND)
        reader = WireReader(sock)
        assert reader.read().body == body
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=5000000-5000099\r\n\r\n")
        assert reader.read().body == body[5000000:5000100]


# -- the handshake on the selector -------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01"], ids=["silent", "partial"])
def test_slow_handshake_is_cut_at_the_head_deadline(
    www: Path, certificate: Certificate, sent: bytes
) -> None:
    """A client that sends nothing, or half a ClientHello, is parked (no thread waits on it),
    the server answers others meanwhile, and it is closed at --header-timeout."""
    with (
        running_server(
            root=www,
            certfile=certificate.cert,
            keyfile=certificate.key,
            header_timeout=0.5,
            threads=1,
            access_log=False,
        ) as server,
        connect(server) as slow,
    ):
        slow.sendall(sent)
        started = time.monotonic()
        wait_for_owner(server, Owner.HANDSHAKE)
        with tls_connect(server, certificate) as probe:
            probe.sendall(GET)
            assert WireReader(probe).read().body == b"hello, world\n"
        assert slow.recv(100) == b""  # closed, without a word: it spoke no TLS yet
        assert 0.4 <= time.monotonic() - started <= 5


def test_plain_http_on_the_tls_port_gets_400(
    tls_server: Server, error_log: list[logging.LogRecord]
) -> None:
    """Plain HTTP sent to the TLS port is answered 400 in plain HTTP, then closed; nothing is
    logged as an error."""
    with connect(tls_server) as sock:
        sock.sendall(GET)
        reader = WireReader(sock)
        response = reader.read()
        assert response.status == 400
        assert b"HTTPS" in response.body
        assert reader.at_eof()
    assert error_log == []


def test_tls_on_a_plain_port_fails_cleanly(server: Server, certificate: Certificate) -> None:
    """A TLS handshake sent to a plain-HTTP port fails on the client; the server answers 400
    (no traceback) and goes on serving."""
    with connect(server) as sock, pytest.raises(ssl.SSLError):
        client_context(certificate).wrap_socket(sock, server_hostname="localhost")
    with connect(server) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        assert WireReader(sock).read().status == 400
    with connect(server) as sock:
        sock.sendall(GET)
        assert WireReader(sock).read().status == 200


def test_garbage_handshake_is_closed_and_leaks_nothing(
    tls_server: Server, certificate: Certificate, error_log: list[logging.LogRecord]
) -> None:
    """Bytes that are neither TLS nor HTTP close the connection, logging no error; descriptors
    do not leak."""
    with tls_connect(tls_server, certificate):
        pass  # warm up lazily opened descriptors
    before = open_fds()
    for _ in range(20):
        with connect(tls_server) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x01\xff" + b"\x00" * 50)
            try:
                received = recv_until_closed(sock)  # at most a TLS alert, then the close
            except ConnectionResetError:  # closed with the rest of the garbage unread
                received = b""
            assert received == b"" or received.startswith(b"\x15\x03")
    deadline = time.monotonic() + NET_TIMEOUT
    while open_fds() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert open_fds() <= before
    assert error_log == []


def test_graceful_stop_closes_handshaking_connections(www: Path, certificate: Certificate) -> None:
    """A connection still in its handshake is closed at once by a graceful stop, not after
    the grace period."""
    server = Server(
        root=www,
        port=0,
        certfile=certificate.cert,
        keyfile=certificate.key,
        grace_period=30,
        access_log=False,
    )
    with running_server(server=server), connect(server) as silent:
        wait_for_owner(server, Owner.HANDSHAKE)
        started = time.monotonic()
        server.shutdown()
        assert server.wait_stopped(NET_TIMEOUT)
        assert time.monotonic() - started < 5
        assert silent.recv(100) == b""


# -- the context ------------------------------------------------------------------------------


def test_context_is_tls_12_or_later_with_alpn(www: Path, certificate: Certificate) -> None:
    """The server's context refuses protocols before TLS 1.2 and offers only http/1.1; a client
    limited to TLS 1.1 fails its handshake."""
    config = ServerConfig(root=www, certfile=certificate.cert, keyfile=certificate.key)
    context = build_context(config)
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ALPN_PROTOCOLS == ["http/1.1"]
    assert config.scheme == "https"
    with running_server(dataclasses.replace(config, port=0, access_log=False)) as server:
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname = False
        old.verify_mode = ssl.CERT_NONE
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client would speak TLS 1.1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # (that is the point)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with connect(server) as sock, pytest.raises((ssl.SSLError, ConnectionResetError)):
            old.wrap_socket(sock)


def test_key_in_the_certificate_file_and_an_encrypted_key(
    www: Path, certificate: Certificate
) -> None:
    """A certificate file holding its key needs no --keyfile; an encrypted key opens with its
    password; the server's url says https."""
    for settings in (
        {"certfile": certificate.combined},
        {
            "certfile": certificate.cert,
            "keyfile": certificate.encrypted_key,
            "keyfile_password": KEY_PASSWORD,
        },
    ):
        with (
            running_server(root=www, access_log=False, **settings) as server,
            tls_connect(server, certificate) as sock,
        ):
            assert server.url.startswith("https://127.0.0.1:")
            sock.sendall(GET)
            assert WireReader(sock).read().body == b"hello, world\n"


def test_password_is_not_in_the_config_repr(certificate: Certificate, www: Path) -> None:
    """The key's password never shows in a printed configuration."""
    config = ServerConfig(
        root=www,
        certfile=certificate.cert,
        keyfile=certificate.encrypted_key,
        keyfile_password=KEY_PASSWORD,
    )
    assert KEY_PASSWORD not in repr(config)


@pytest.mark.parametrize("setting", ["keyfile", "keyfile_password", "ssl_ciphers"])
def test_tls_settings_need_a_certificate(www: Path, setting: str) -> None:
    """A key, a password or ciphers without a certificate is a ConfigError, not plain HTTP."""
    with pytest.raises(ConfigError, match="needs a certfile"):
        ServerConfig(root=www, **{setting: "x"})  # type: ignore[arg-type]


def test_ciphers_are_applied(www: Path, certificate: Certificate) -> None:
    """--ssl-ciphers restricts TLS 1.2 suites: a TLS 1.2 client negotiates the one allowed."""
    with running_server(
        root=www,
        certfile=certificate.cert,
        keyfile=certificate.key,
        ssl_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256",
        access_log=False,
    ) as server:
        context = client_context(certificate)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with context.wrap_socket(connect(server), server_hostname="localhost") as sock:
            cipher = sock.cipher()
            assert cipher is not None and cipher[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"


# -- one-line errors from the command ----------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webserver", "run", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=NET_TIMEOUT * 3,
        check=False,
    )


@needs_openssl
@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["--certfile", "missing.pem"], "cannot read certificate file"),
        (["--certfile", "{cert}", "--keyfile", "missing.pem"], "cannot read key file"),
        (["--certfile", "{cert}", "--keyfile", "{other_key}"], "does not match the certificate"),
        (["--certfile", "{cert}", "--keyfile", "{encrypted_key}"], "is encrypted"),
        (
            ["--certfile", "{cert}", "--keyfile", "{encrypted_key}", "--keyfile-password", "no"],
            "wrong --keyfile-password",
        ),
        (["--certfile", "{cert}"], "no PEM private key"),
        (["--certfile", "{key}", "--keyfile", "{key}"], "no PEM certificate"),
        (["--certfile", "{cert}", "--keyfile", "{key}", "--ssl-ciphers", "NONE"], "no cipher"),
        (["--keyfile", "{key}"], "needs a certfile"),
    ],
)
def test_certificate_problems_are_one_line_exit_2(
    www: Path, certificate: Certificate, files: list[str], message: str
) -> None:
    """A missing or unreadable file, a wrong or missing password, a key that does not match:
    one Error line, exit status 2, nothing listening, no traceback."""
    names = {name: str(getattr(certificate, name)) for name in vars(certificate)}
    done = run_cli("--root", str(www), *(arg.format(**names) for arg in files))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert done.stdout == ""


@needs_openssl
@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_key_is_one_line(www: Path, certificate: Certificate, tmp_path: Path) -> None:
    """A key file the server may not read is named in one line, exit 2."""
    key = tmp_path / "locked.pem"
    key.write_bytes(certificate.key.read_bytes())
    key.chmod(0)
    done = run_cli("--root", str(www), "--certfile", str(certificate.cert), "--keyfile", str(key))
    assert done.returncode == 2
    assert done.stderr.strip() == f"Error: cannot read key file {key}: Permission denied"


@needs_openssl
def test_cli_serves_https_and_says_so(www: Path, certificate: Certificate) -> None:
    """`webserver run --certfile --keyfile` announces an https URL and serves on it."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "webserver", "run", "--port", "0", "--root", str(www),
            "--certfile", str(certificate.cert), "--keyfile", str(certificate.key),
            "--no-access-log",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"Serving {www.resolve()} on https://127.0.0.1:"), line
        port = int(line.rstrip().rstrip("/").rsplit(":", 1)[1])
        conn = http.client.HTTPSConnection(
            "localhost", port, timeout=NET_TIMEOUT, context=client_context(certificate)
        )
        conn.request("GET", "/hello.txt")
        assert conn.getresponse().read() == b"hello, world\n"
        conn.close()
    finally:
        proc.terminate()
        proc.wait(NET_TIMEOUT)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_help_lists_the_tls_options() -> None:
    """--help explains each TLS option."""
    done = subprocess.run(
        [sys.executable, "-m", "webserver", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=NET_TIMEOUT * 3,
        check=True,
    )
    for option in ("--certfile", "--keyfile", "--keyfile-password", "--ssl-ciphers"):
        assert option in done.stdout
    assert "TLS 1.2" in done.stdout


@needs_openssl
def test_keyfile_password_from_the_environment(www: Path, certificate: Certificate) -> None:
    """WEBSERVER_KEYFILE_PASSWORD gives the key's password without the command line: a wrong
    one is reported as such (so it was read)."""
    done = subprocess.run(
        [
            sys.executable, "-m", "webserver", "run", "--port", "0", "--root", str(www),
            "--certfile", str(certificate.cert), "--keyfile", str(certificate.encrypted_key),
        ],
        capture_output=True,
        text=True,
        timeout=NET_TIMEOUT * 3,
        check=False,
        env={**os.environ, "WEBSERVER_KEYFILE_PASSWORD": "not-it"},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().startswith("Error: wrong --keyfile-password")


def test_server_refuses_a_bad_certificate_when_built(www: Path, certificate: Certificate) -> None:
    """A library user learns of a key that does not match when building the Server, from a
    ConfigError naming both files, before anything listens."""
    with pytest.raises(ConfigError, match="does not match the certificate") as caught:
        Server(root=www, port=0, certfile=certificate.cert, keyfile=certificate.other_key)
    assert str(certificate.other_key) in str(caught.value)


def test_refused_upload_is_answered_then_closed_cleanly(
    www: Path, certificate: Certificate
) -> None:
    """An upload over the limit gets its 413 over TLS; the server then says close_notify and
    discards the rest of the body (lingering), so the client reads the answer and a clean end."""
    with (
        running_server(
            root=www,
            certfile=certificate.cert,
            keyfile=certificate.key,
            max_upload=1024,
            access_log=False,
        ) as server,
        tls_connect(server, certificate) as sock,
    ):
        sock.sendall(b"POST /big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        sock.sendall(b"x" * 65536)
        reader = WireReader(sock)
        assert reader.read().status == 413
        assert reader.at_eof()  # with close_notify: else SSLEOFError


def test_over_max_connections_is_closed_without_a_handshake(
    www: Path, certificate: Certificate
) -> None:
    """Past --max-connections a TLS client is closed at once (no 503: it speaks no HTTP yet,
    and a handshake would spend CPU on a client that gets no service); the held one is served."""
    with (
        running_server(
            root=www,
            certfile=certificate.cert,
            keyfile=certificate.key,
            max_connections=1,
            access_log=False,
        ) as server,
        tls_connect(server, certificate) as held,
    ):
        # The ClientHello is there before the server decides (as under load, when accepting
        # lags): the selector is held at the max_connections check meanwhile.
        with server._busy_lock:
            extra = connect(server)
            extra.sendall(client_hello(certificate))
        with extra:
            try:
                answer = recv_until_closed(extra)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # not even a ServerHello
        held.sendall(GET)
        assert WireReader(held).read().body == b"hello, world\n"
