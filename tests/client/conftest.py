"""Fixtures for client tests: a scriptable origin, a raw "bad server", a movable clock, peers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest

from webclient import (
    Client,
    ClientConfig,
    ConnectionClosed,
    ProtocolError,
    ReadTimeout,
    ResponseTooLarge,
    WebClientError,
)
from webclient._entries import EntryStore
from webserver import Handler, Request, Response, Server
from webserver.testing import running_server

from ..conftest import nginx_or_skip

#: Longest wait for a third-party server to accept connections.
STARTUP_DEADLINE = 10.0
#: The client timeout in tests: a wrong answer fails instead of hanging.
CLIENT_TIMEOUT = 5.0


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Long fuzzing runs only on request (``--run-slow`` when registered, or WEBCLIENT_SLOW=1)."""
    if item.get_closest_marker("slow") is None:
        return
    wanted = bool(item.config.getoption("--run-slow", default=False))
    if not wanted and os.environ.get("WEBCLIENT_SLOW") != "1":
        pytest.skip("slow test: run with --run-slow or WEBCLIENT_SLOW=1")


class FakeClock:
    """A clock that starts at the real time and only moves when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Seen:
    """One request as the origin saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    client: tuple[str, int]
    body: bytes


Script = Callable[[Request], Response]


@dataclass
class Origin(Handler):
    """Answers each path from a script of responses (the last one repeats); records requests."""

    scripts: dict[str, list[Script]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(
        self, path: str, *responses: Script | tuple[int, list[tuple[str, str]], bytes]
    ) -> None:
        steps: list[Script] = []
        for item in responses:
            if callable(item):
                steps.append(item)
            else:
                status, headers, body = item
                steps.append(_fixed_answer(status, list(headers), body))
        with self.lock:
            self.scripts[path] = steps

    def _answer(self, request: Request) -> Response:
        body = request.body.read() if request.method == "POST" else b""
        headers = dict(request.headers)
        seen = Seen(request.method, request.path, request.query, headers, request.client, body)
        with self.lock:
            self.seen.append(seen)
            steps = self.scripts.get(request.path)
            if not steps:
                return Response(404, [], b"no script\n")
            step = steps.pop(0) if len(steps) > 1 else steps[0]
        return step(request)

    def get(self, request: Request) -> Response:
        return self._answer(request)

    def post(self, request: Request) -> Response:
        return self._answer(request)

    def requests_to(self, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path == path]

    @property
    def connections(self) -> set[tuple[str, int]]:
        with self.lock:
            return {s.client for s in self.seen}


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[tuple[Server, Origin]]:
    """Our server with a scriptable handler on every path."""
    handler = Origin()
    root = tmp_path / "origin-root"
    root.mkdir()

    def setup(server: Server) -> None:
        server.route("/", handler, prefix=True)

    server = Server(root=root, port=0, access_log=False, default_routes=False)
    with running_server(server=server, setup=setup) as srv:
        yield srv, handler


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def client(cache_dir: Path, clock: FakeClock) -> Iterator[Client]:
    """A client with a private cache folder and a movable clock (retries wait milliseconds)."""
    config = ClientConfig(cache_dir=cache_dir, timeout=CLIENT_TIMEOUT, retry_base_delay=0.001)
    with Client(config, clock=clock) as c:
        yield c


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """A folder of files to serve: text, binary, nested."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello, world\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 300)
    (root / "sub" / "page.html").write_bytes(b"<p>page</p>\n")
    return root


@pytest.fixture
def static_server(www: Path) -> Iterator[Server]:
    with running_server(root=www, access_log=False) as server:
        yield server


def free_port() -> int:
    """An ephemeral port that was free a moment ago (for servers that cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path | None = None) -> None:
    """Poll-connect until the subprocess accepts, it exits, or the deadline passes."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = log.read_text() if log is not None and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {detail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # a poll interval, bounded by the deadline above
    raise RuntimeError(f"server on port {port} did not start within {STARTUP_DEADLINE} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextlib.contextmanager
def running_nginx(prefix: Path, root: Path, listen: str = "") -> Iterator[int]:
    """nginx serving ``root`` on an ephemeral 127.0.0.1 port (``listen`` adds to the directive,
    e.g. ``ssl`` with its certificate lines); the port."""
    binary = nginx_or_skip()
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    # As root, nginx workers drop to "nobody", who cannot enter pytest's private tmp folders.
    user = "user root;\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}daemon off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        "events {}\n"
        "http {\n"
        f"  access_log off;\n  client_body_temp_path {prefix}/body;\n"
        f"  proxy_temp_path {prefix}/proxy;\n  fastcgi_temp_path {prefix}/fastcgi;\n"
        f"  uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n"
        f"  server {{ listen 127.0.0.1:{port}{listen}; root {root}; }}\n"
        "}\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(prefix)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc, prefix / "error.log")
        yield port
    finally:
        _stop(proc)


@pytest.fixture
def nginx(tmp_path: Path, www: Path) -> Iterator[int]:
    """nginx serving ``www`` on an ephemeral port; the port."""
    with running_nginx(tmp_path / "nginx", www) as port:
        yield port


@dataclass(frozen=True)
class Certificates:
    """A private CA, a server certificate it signed for ``localhost`` only, and another CA."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return key, cert


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Made at run time with the openssl command (skipped without it)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not installed: cannot make test certificates")
    folder = tmp_path_factory.mktemp("tls")
    ca_key, ca = _make_ca(folder, "test-ca")
    _, other_ca = _make_ca(folder, "other-ca")
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost",
    )  # fmt: skip
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
    )  # fmt: skip
    return Certificates(ca=ca, cert=cert, key=key, other_ca=other_ca)


@pytest.fixture
def nginx_tls(tmp_path: Path, www: Path, certificates: Certificates) -> Iterator[int]:
    """nginx serving ``www`` over TLS with the ``localhost`` certificate; the port."""
    listen = (
        f" ssl; ssl_certificate {certificates.cert}; ssl_certificate_key {certificates.key};"
        " keepalive_requests 10000"
    )
    with running_nginx(tmp_path / "nginx-tls", www, listen) as port:
        yield port


@pytest.fixture
def http_server(www: Path) -> Iterator[int]:
    """``python -m http.server`` (HTTP/1.0, Last-Modified only) serving ``www``; the port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            str(port),
            "--directory",
            str(www),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc)
        yield port
    finally:
        _stop(proc)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder for a run, with the cache outside it (tmp_path/cache)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("WEBCLIENT_CACHE_DIR", str(tmp_path / "cache"))
    return folder


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.fixture
def refused_port() -> int:
    """A port nothing listens on."""
    return free_port()


class ListeningThreads:
    """A listener on a free port of 127.0.0.1 whose accept loop hands each connection to
    :meth:`_accepted` (a subclass's), and the threads it spawns, all joined on exit."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> Self:
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
            pass  # wakes the accept loop now rather than at its next timeout
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._stop.is_set():
                conn.close()
                return
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        """Take over ``conn`` (in the accept loop's thread: spawn a thread for anything long)."""
        raise NotImplementedError


class BadServer(ListeningThreads):
    """A raw-socket server answering every connection with fixed bytes, however broken.

    Each connection gets the next of ``replies`` (the last one repeats) once its request head has
    arrived. The server then closes its side, or with ``hang`` sends nothing more until the test
    ends, as a stalled server would. The request heads it received are kept in ``requests``. With
    ``tls`` (a server context), each connection speaks TLS.
    """

    def __init__(
        self, *replies: bytes, hang: bool = False, tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__()
        self.replies = list(replies) or [b""]
        self.hang = hang
        self.tls = tls
        self.requests: list[bytes] = []

    def _accepted(self, conn: socket.socket) -> None:
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        self._spawn(self._answer, conn, reply)

    def _answer(self, conn: socket.socket, reply: bytes) -> None:
        if self.tls is not None:
            conn.settimeout(CLIENT_TIMEOUT)
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return  # the client refused the certificate
        with conn:
            conn.settimeout(0.1)
            head = b""
            while b"\r\n\r\n" not in head and not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    break
                head += data
            self.requests.append(head)
            try:
                conn.settimeout(CLIENT_TIMEOUT)
                conn.sendall(reply)
                conn.settimeout(0.1)
                if self.hang:
                    self._stop.wait()
                    return
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                return  # the client gave up first (an oversized head, a refused body)
            # Wait for the client to close too, so nothing unread makes the kernel send a reset.
            while not self._stop.is_set():
                try:
                    if not conn.recv(65536):
                        return
                except TimeoutError:
                    continue
                except OSError:
                    return


@pytest.fixture
def bad_server() -> Iterator[Callable[..., BadServer]]:
    """Start :class:`BadServer` instances: ``bad_server(reply, ..., hang=False)``."""
    started: list[BadServer] = []

    def start(*replies: bytes, hang: bool = False) -> BadServer:
        server = BadServer(*replies, hang=hang).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


#: Limits for the broken-server cases: small enough that the bodies below go over them.
BROKEN_MAX_SIZE = 1024
BROKEN_TIMEOUT = 0.5
#: Header fields that make a complete response storable, so "nothing was stored" means something.
_CACHEABLE = b'Cache-Control: max-age=600\r\nETag: "e"\r\n'


@dataclass(frozen=True)
class Broken:
    """A broken answer, and the error (type and message pattern) the client must report."""

    name: str
    reply: bytes
    error: type[WebClientError]
    message: str
    hang: bool = False


def _head(*fields: bytes, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + _CACHEABLE + b"".join(f + b"\r\n" for f in fields)


BROKEN = [
    Broken(
        "garbage",
        b"SPDY/9 banana\r\n\r\n",
        ProtocolError,
        r"sent an invalid response \(illegal status line: 'SPDY/9 banana'\)",
    ),
    Broken(
        "malformed status line",
        _head(b"Content-Length: 2", status=b"2x0 OK") + b"\r\nok",
        ProtocolError,
        "sent an invalid response",
    ),
    Broken(
        "closed before answering", b"", ConnectionClosed, "closed the connection without answering"
    ),
    Broken(
        "truncated body",
        _head(b"Content-Length: 10") + b"\r\nabc",
        ConnectionClosed,
        r"closed the connection mid-response \(.*received 3 bytes, expected 10",
    ),
    Broken(
        "oversized head",
        _head(b"X-Big: " + b"a" * 100 * 1024) + b"\r\n",
        ProtocolError,
        r"sent a response head larger than 64\.0 KiB",
    ),
    Broken(
        "content-length over the limit",
        _head(b"Content-Length: 10737418240") + b"\r\n",
        ResponseTooLarge,
        r"announced a body of 10\.0 GiB, more than the limit of 1\.0 KiB",
        hang=True,  # reading the body would time out: the refusal must come first
    ),
    Broken(
        "chunked body over the limit",
        _head(b"Transfer-Encoding: chunked")
        + b"\r\n"
        + (b"200\r\n" + b"x" * 512 + b"\r\n") * 4
        + b"0\r\n\r\n",
        ResponseTooLarge,
        r"grew past the limit of 1\.0 KiB; it was cut off",
    ),
    Broken(
        "close-delimited body over the limit",
        _head(b"Connection: close") + b"\r\n" + b"x" * 5000,
        ResponseTooLarge,
        r"grew past the limit of 1\.0 KiB",
    ),
    Broken(
        "stalls mid-body",
        _head(b"Content-Length: 100") + b"\r\nabc",
        ReadTimeout,
        r"127\.0\.0\.1:\d+ stopped sending mid-response for 0\.5 s",
        hang=True,
    ),
    Broken(
        "never answers",
        b"",
        ReadTimeout,
        r"no response from 127\.0\.0\.1:\d+ within 0\.5 s",
        hang=True,
    ),
]
#: A complete response with the same cacheable fields: it is stored (the control case).
COMPLETE = _head(b"Content-Length: 2") + b"\r\nok"


@pytest.fixture(autouse=True)
def _close_storages(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every cache index a test opened, so no SQLite connection outlives its test
    (Python 3.13 reports those as ResourceWarning, which this suite treats as an error)."""
    from webclient._storage import Storage

    opened: list[Storage] = []
    original = Storage.__init__

    def recording_init(self: Storage, *args: Any, **kwargs: Any) -> None:
        opened.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Storage, "__init__", recording_init)
    yield
    for storage in opened:
        with contextlib.suppress(Exception):
            storage.close()


def _fixed_answer(status: int, headers: list[tuple[str, str]], body: bytes) -> Script:
    """A scripted step that answers every request with the same response."""
    return lambda _request: Response(status, list(headers), body)


def put(storage: EntryStore, key: str, body: bytes, *, now: float = 1.0) -> None:
    """Store a 200 response with ``body`` under ``key`` directly, as the cache would."""
    writer = storage.new_body(10**9)
    writer.write(body)
    writer.finish()
    storage.insert(
        key=key,
        vary=(),
        status=200,
        reason="OK",
        headers=[("ETag", '"x"')],
        body=writer,
        request_time=now,
        response_time=now,
        now=now,
    )


def fresh_python(code: str, *args: str) -> str:
    """What ``code`` prints (stripped) run by a new interpreter with ``args``, where nothing is
    imported yet: how a test sees which modules a piece of the client loads."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
