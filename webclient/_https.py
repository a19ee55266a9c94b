"""TLS for ``https://`` origins: the context, the handshake, and its failures as our errors.

Rules: certificates are verified by default against the system's trusted roots
(:func:`ssl.create_default_context`), or only against ``cacert`` when one is given; the host name
is checked and sent as SNI (``server_hostname``); ``insecure`` turns both checks off and the
client says so once. A certificate that does not verify is a :class:`CertificateError`, which is
not a :class:`~webclient.errors.TransportError`: it is never retried nor answered by a stale
stored copy, since trying again cannot make the server trustworthy. Other handshake failures are
transport errors.
"""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

from .errors import CertificateError, ClientConfigError, TransportError

#: OpenSSL's verify codes (X509_V_ERR_*) for an issuer the trusted roots do not hold, the only
#: failures a --cacert file can cure (an expired certificate, say, stays expired).
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})
#: What OpenSSL says when the first bytes back are not a TLS record, as from a plain HTTP server.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"})

#: The one line said when verification is off.
INSECURE_WARNING = "certificate verification is off (--insecure): https gives no protection"


def make_context(*, cacert: Path | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A client context: system roots (or ``cacert`` alone), host name check, TLS 1.2 or later."""
    try:
        context = ssl.create_default_context(cafile=None if cacert is None else str(cacert))
    except FileNotFoundError as exc:
        raise ClientConfigError(f"no such CA file: {cacert}") from exc
    except ssl.SSLError as exc:
        # str(exc) is "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate ... (_ssl.c:4154)".
        words = re.sub(r"^\[[^]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(exc.args[-1]))
        raise ClientConfigError(
            f"cannot use {cacert} as CA certificates: {words} (not a PEM file of certificates)"
        ) from exc
    except OSError as exc:
        raise ClientConfigError(f"cannot use {cacert} as CA certificates: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Pipelining and keep-alive work without it, but HTTP/1.1 is what this client speaks.
    context.set_alpn_protocols(["http/1.1"])
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def wrap(sock: socket.socket, context: ssl.SSLContext, host: str, where: str) -> ssl.SSLSocket:
    """The TLS socket after a complete handshake (SNI and the name check use ``host``).

    The TCP socket is closed when the handshake fails.
    """
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        reason = str(exc.verify_message).rstrip(".")
        if "mismatch" in reason:  # the CA is fine, the name is not: --cacert would not help
            raise CertificateError(f"certificate of {where} is for another name: {reason}") from exc
        hint = " (use --cacert FILE for a private CA)" if exc.verify_code in _UNKNOWN_ISSUER else ""
        raise CertificateError(f"certificate of {where} not trusted: {reason}{hint}") from exc
    except ssl.CertificateError as exc:  # pragma: no cover - 3.11 raises the subclass above
        sock.close()
        raise CertificateError(f"certificate of {where} not trusted: {exc}") from exc
    except TimeoutError as exc:
        sock.close()
        raise TransportError(f"TLS handshake with {where} timed out") from exc
    except ssl.SSLError as exc:
        sock.close()
        reason = exc.reason or str(exc)
        if reason in _NOT_TLS:
            reason = f"the server did not answer in TLS (a plain http:// server?): {reason}"
        raise TransportError(f"TLS handshake with {where} failed: {reason}") from exc
    except OSError as exc:
        sock.close()
        raise TransportError(
            f"TLS handshake with {where} failed: {exc.strerror or 'connection closed'}"
        ) from exc
