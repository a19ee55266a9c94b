"""TLS: the server's SSL context, its sockets, and the handshake as a step the selector repeats.

Rules this module keeps:

* Nothing here waits for the peer. Sockets are non-blocking; :func:`handshake_step` does what the
  network allows and says what it waits for, so the selector thread can park the connection
  (``Owner.HANDSHAKE``) under the head deadline and a silent client holds no thread.
* :class:`TLSSocket` turns OpenSSL's "want read / want write" into ``BlockingIOError``, the one
  signal the rest of the server knows for "not now": a send refused that way is retried later
  with the same bytes, as OpenSSL requires (the connection keeps its output queue until a send
  succeeds, and CPython accepts the buffer at a new address).
* A certificate, key or password problem is one :class:`~webserver.ConfigError` sentence.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import ssl
from pathlib import Path

from .config import ServerConfig
from .errors import ConfigError

#: The only application protocol offered in ALPN: this server speaks HTTP/1.x.
ALPN_PROTOCOLS = ["http/1.1"]

#: What a client that speaks plain HTTP to the TLS port reads before the connection closes (as
#: nginx does), instead of a handshake failure it cannot interpret.
_PLAIN_HTTP_TEXT = b"This port speaks HTTPS: plain HTTP was sent to it.\n"
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"%s"
) % (len(_PLAIN_HTTP_TEXT), _PLAIN_HTTP_TEXT)
#: At most this much of a plain-HTTP request is read (and discarded) before answering it.
PLAIN_HTTP_DRAIN = 64 * 1024


class Step(enum.Enum):
    """Where a handshake stands after :func:`handshake_step`."""

    DONE = "done"  #: the connection is ready for HTTP: wait for a request
    REQUEST = "request"  #: ready, and request bytes are already decrypted: serve them now
    READ = "read"  #: waiting for the client's next bytes
    WRITE = "write"  #: waiting for room in the kernel's send buffer
    FAILED = "failed"  #: not TLS, or a TLS the server will not speak: close it
    PLAIN_HTTP = "plain-http"  #: the client spoke plain HTTP: answer PLAIN_HTTP_ANSWER, close


class TLSSocket(ssl.SSLSocket):
    """A server-side TLS socket whose "not now" is ``BlockingIOError``, as a plain socket's."""

    #: The handshake has completed: closing says close_notify (before it, TLS has not started
    #: for the client, and a plain-HTTP client must read nothing after our plain answer).
    established = False

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        """Decrypted bytes, as many as ``buflen`` allows: none is left inside OpenSSL, where
        epoll could not see it."""
        try:
            data = super().recv(buflen, flags)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError("TLS record incomplete") from None
        while data and len(data) < buflen and self.pending():
            data += super().recv(min(self.pending(), buflen - len(data)), flags)
        return data

    def send(self, data: bytes, flags: int = 0) -> int:  # type: ignore[override]
        try:
            return super().send(data, flags)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError("TLS send buffer full") from None

    def shutdown(self, how: int) -> None:
        """On the owner's half-close (``SHUT_WR``), say close_notify first, so the client can
        tell the end of the stream from a truncation; best effort, never waiting. Any other
        shutdown comes from another thread at the stop, to wake the worker using the socket:
        the TLS state is left to that worker (which then sees the end of the stream) and only
        the kernel's socket is shut."""
        if how == socket.SHUT_WR:
            self._close_notify()
            super().shutdown(how)
        else:
            socket.socket.shutdown(self, how)

    def close(self) -> None:
        self._close_notify()
        super().close()

    def _close_notify(self) -> None:
        tls = getattr(self, "_sslobj", None)  # None once shut down
        if self.established and tls is not None and self.fileno() >= 0:
            with contextlib.suppress(OSError, ValueError):
                tls.shutdown()  # sends close_notify; then "want read" for the peer's reply


def build_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The SSL context ``config`` asks for (TLS 1.2 or later, ALPN ``http/1.1``), else None.

    Reads the certificate and key once, so that every mistake is reported before the server
    listens: a file that cannot be read, a key that is encrypted without a password or with the
    wrong one, a key that does not match the certificate, ciphers that select nothing.
    """
    if config.certfile is None:
        return None
    certfile = config.certfile
    keyfile = config.keyfile or certfile
    cert_text = _read_pem(certfile, "certificate")
    key_text = cert_text if keyfile == certfile else _read_pem(keyfile, "key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.sslsocket_class = TLSSocket
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    if config.ssl_ciphers is not None:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise ConfigError(f"no cipher matches --ssl-ciphers {config.ssl_ciphers!r}") from None
    asked: list[bool] = []

    def password() -> bytes:
        # Always a callback: without one, OpenSSL would prompt on the terminal for a passphrase.
        asked.append(True)
        return (config.keyfile_password or "").encode()

    try:
        context.load_cert_chain(certfile, keyfile, password)
    except ssl.SSLError as exc:
        raise ConfigError(
            _load_problem(exc, certfile, keyfile, cert_text, key_text, bool(asked), config)
        ) from None
    except OSError as exc:  # the file changed since it was read
        raise ConfigError(f"cannot read {exc.filename or certfile}: {exc.strerror}") from None
    return context


def _read_pem(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except IsADirectoryError:
        raise ConfigError(f"{what} file is a folder: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None


def _load_problem(
    exc: ssl.SSLError,
    certfile: Path,
    keyfile: Path,
    cert_text: str,
    key_text: str,
    asked: bool,
    config: ServerConfig,
) -> str:
    """One sentence for a certificate or key OpenSSL refused (its own messages are vague)."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"the key in {keyfile} does not match the certificate in {certfile}"
    if asked and config.keyfile_password is None:
        return f"the key in {keyfile} is encrypted: give its password with --keyfile-password"
    if asked:
        return f"wrong --keyfile-password for the key in {keyfile}"
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        return f"no PEM certificate in {certfile}"
    if "PRIVATE KEY-----" not in key_text:
        return f"no PEM private key in {keyfile}"
    return f"cannot load the certificate {certfile} with the key {keyfile}: {exc.reason or exc}"


def wrap(context: ssl.SSLContext, sock: socket.socket) -> TLSSocket:
    """A just-accepted socket as a non-blocking server-side TLS socket, handshake not started."""
    sock.setblocking(False)
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    assert isinstance(tls, TLSSocket)
    return tls


def handshake_step(sock: socket.socket) -> Step:
    """Carry the handshake of ``sock`` (a :class:`TLSSocket`) as far as the network allows."""
    assert isinstance(sock, TLSSocket)
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return Step.READ
    except ssl.SSLWantWriteError:
        return Step.WRITE
    except ssl.SSLError as exc:
        return Step.PLAIN_HTTP if exc.reason == "HTTP_REQUEST" else Step.FAILED
    except OSError:  # reset, or closed before a whole ClientHello
        return Step.FAILED
    sock.established = True
    # The kernel does not know of bytes OpenSSL has already read: epoll would not report them.
    return Step.REQUEST if sock.pending() else Step.DONE


def answer_plain_http(sock: socket.socket) -> None:
    """Tell a plain-HTTP client it reached the TLS port, in plain HTTP; never waits."""
    with contextlib.suppress(OSError):
        # Past the TLS layer, straight to the kernel: the client speaks no TLS. The rest of its
        # request is read first (what has arrived), so that closing does not reset the
        # connection under the answer.
        socket.socket.recv(sock, PLAIN_HTTP_DRAIN)
    with contextlib.suppress(OSError):
        socket.socket.send(sock, PLAIN_HTTP_ANSWER)
