"""Content codings: Accept-Encoding as a pure function, gzip as a stream, curl --compressed."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webserver import Server
from webserver.encoding import (
    choose_coding,
    coding_quality,
    gzip_bytes,
    gzip_file,
    is_compressible,
    parse_accept_encoding,
)

from .test_real_clients import need, run

CODINGS = st.sampled_from(["gzip", "br", "identity", "*", "deflate", "x-gzip", "zstd"])
QS = st.sampled_from(["", ";q=0", ";q=0.5", ";q=1", ";q=0.000", ";q=1.0", ";q=bad", ";q=2"])


@pytest.mark.parametrize(
    ("value", "available", "chosen"),
    [
        ("gzip", ["gzip"], "gzip"),
        ("gzip, br", ["br", "gzip"], "br"),
        ("gzip;q=1, br;q=0.5", ["br", "gzip"], "gzip"),
        ("gzip;q=0", ["gzip"], None),
        ("*", ["br", "gzip"], "br"),
        ("*;q=0", ["gzip"], None),
        ("*, gzip;q=0", ["gzip"], None),
        ("*, br;q=0", ["br", "gzip"], "gzip"),
        ("identity;q=0, gzip;q=0.1", ["gzip"], "gzip"),
        ("identity, gzip;q=0.5", ["gzip"], None),
        ("x-gzip", ["gzip"], "gzip"),
        ("GZIP", ["gzip"], "gzip"),
        ("deflate", ["gzip"], None),
        ("", ["gzip"], None),
        ("gzip;q=oops", ["gzip"], None),
        ("gzip;q=0.0, gzip;q=1", ["gzip"], None),
        ("identity;q=0", [], None),
    ],
)
def test_choose_coding(value: str, available: list[str], chosen: str | None) -> None:
    """The best acceptable coding wins, q=0 refuses, ``*`` covers unlisted codings, identity
    wins only when the client prefers it, and a malformed element is ignored."""
    assert choose_coding(value, available) == chosen


@given(st.lists(st.tuples(CODINGS, QS), max_size=6), st.lists(st.sampled_from(["br", "gzip"])))
def test_choice_is_always_acceptable(elements: list[tuple[str, str]], order: list[str]) -> None:
    """Whatever the field says, the choice is an available coding with q > 0 that no other
    available coding beats, or identity."""
    value = ", ".join(c + q for c, q in elements)
    available = list(dict.fromkeys(order))
    chosen = choose_coding(value, available)
    accepted = parse_accept_encoding(value)
    if chosen is None:
        assert all(
            coding_quality(accepted, c) <= coding_quality(accepted, "identity")
            or coding_quality(accepted, c) == 0
            for c in available
        )
    else:
        assert chosen in available
        q = coding_quality(accepted, chosen)
        assert q > 0
        assert all(coding_quality(accepted, c) <= q for c in available)


@given(st.text(max_size=60))
def test_any_field_value_parses(value: str) -> None:
    """Any text parses to qualities within 0..1, never an exception."""
    assert all(0.0 <= q <= 1.0 for q in parse_accept_encoding(value).values())


@pytest.mark.parametrize(
    ("content_type", "compressible"),
    [
        ("text/plain; charset=utf-8", True),
        ("text/html", True),
        ("application/json", True),
        ("application/ld+json", True),
        ("text/javascript; charset=utf-8", True),
        ("image/svg+xml; charset=utf-8", True),
        ("application/xml", True),
        ("image/png", False),
        ("application/gzip", False),
        ("application/zip", False),
        ("video/mp4", False),
        ("application/octet-stream", False),
    ],
)
def test_compressible_types(content_type: str, compressible: bool) -> None:
    """Text-like types are compressed; already compressed and binary types are not."""
    assert is_compressible(content_type) is compressible


@given(st.binary(max_size=5000), st.integers(1, 700))
def test_gzip_file_round_trips_in_pieces(data: bytes, chunk: int) -> None:
    """The streamed gzip decodes to the file's bytes, read ``chunk`` bytes at a time."""
    reads: list[int] = []

    class Recording(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            reads.append(-1 if size is None else size)
            return super().read(size)

    file = Recording(data)
    assert gzip.decompress(b"".join(gzip_file(file, len(data), chunk))) == data
    assert all(0 < size <= chunk for size in reads)
    assert file.closed


def test_gzip_file_closes_when_abandoned() -> None:
    """A client gone mid-body closes the generator, and with it the file."""
    file = io.BytesIO(bytes(200_000))
    body = gzip_file(file, 200_000, 1024)
    next(body)
    body.close()
    assert file.closed


def test_gzip_is_deterministic() -> None:
    """The same bytes always gzip to the same bytes (no name or time in the header)."""
    data = b"abc" * 1000
    assert gzip_bytes(data) == gzip_bytes(data)
    assert zlib.decompress(gzip_bytes(data), 31) == data


@pytest.mark.parametrize("name", ["page.js", "big.txt", "pre.css", "hello.txt", "data.bin"])
def test_curl_compressed_round_trips(server: Server, www: Path, name: str) -> None:
    """curl --compressed gets every file byte-exact: gzipped on the fly (cached and streamed),
    a precompressed sibling, a file too small to compress, and a binary one."""
    curl = need("curl")
    (www / "page.js").write_bytes(b"var x = 1;\n" * 500)
    (www / "big.txt").write_bytes(b"".join(b"line %d\n" % i for i in range(100_000)))
    (www / "pre.css").write_bytes(b"body { margin: 0 }\n" * 100)
    (www / "pre.css.gz").write_bytes(gzip.compress((www / "pre.css").read_bytes()))
    result = run(
        curl, "-sS", "--compressed", "-D", "-", "-o", "-", "--max-time", "10", server.url + name
    )
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert body == (www / name).read_bytes()
    coded = name in ("page.js", "big.txt", "pre.css")
    assert (b"content-encoding: gzip" in head.lower()) is coded
