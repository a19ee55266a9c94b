"""GET and HEAD of files: headers, conditional requests, folders, and path traversal."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import pytest

from webserver import NotFound, Request, Server, StaticFiles
from webserver.headers import Headers
from webserver.httpdate import format_http_date, parse_http_date
from webserver.paths import TEMP_PREFIX
from webserver.testing import running_server

from .conftest import NET_TIMEOUT, connect, peak_rss_kib, serving, webserver_process
from .wire import WireReader


def fetch(
    server: Server, target: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request over a fresh http.client connection."""
    host, port = server.listen()
    conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
    try:
        conn.request(method, target, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def raw_get(server: Server, target: bytes) -> tuple[int, bytes]:
    """Send a target byte-for-byte, bypassing any client-side normalisation."""
    with connect(server) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = WireReader(sock).read()
        return response.status, response.body


def test_file_with_validators(server: Server, www: Path) -> None:
    """A file is 200 with its bytes, type, length, Last-Modified, strong ETag and Date."""
    status, headers, body = fetch(server, "/hello.txt")
    assert status == 200
    assert body == (www / "hello.txt").read_bytes()
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Length"] == str(len(body))
    assert headers["ETag"].startswith('"')
    mtime = parse_http_date(headers["Last-Modified"])
    assert mtime == int(os.stat(www / "hello.txt").st_mtime)
    assert parse_http_date(headers["Date"]) is not None


def test_binary_is_octet_stream_and_exact(server: Server, www: Path) -> None:
    """Unknown suffixes fall back to application/octet-stream; bytes are exact."""
    status, headers, body = fetch(server, "/data.bin")
    assert (status, headers["Content-Type"]) == (200, "application/octet-stream")
    assert body == (www / "data.bin").read_bytes()


def test_head_has_get_headers_and_no_body(server: Server) -> None:
    """HEAD answers the same headers as GET, without a body."""
    _, get_headers, _ = fetch(server, "/hello.txt")
    with connect(server) as sock:
        sock.sendall(
            b"HEAD /hello.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        reader = WireReader(sock)
        head = reader.read(head_only=True)
        after = reader.read()
    assert head.status == 200
    assert head.header("Content-Length") == get_headers["Content-Length"]
    assert head.header("ETag") == get_headers["ETag"]
    # The next response starts right after the head: no body bytes were sent for HEAD.
    assert after.status == 200
    assert after.body == b"hello, world\n"


def test_if_none_match_gives_304(server: Server) -> None:
    """A matching ETag gets 304 with the validators and no body."""
    _, headers, _ = fetch(server, "/hello.txt")
    status, headers304, body = fetch(
        server, "/hello.txt", headers={"If-None-Match": headers["ETag"]}
    )
    assert (status, body) == (304, b"")
    assert headers304["ETag"] == headers["ETag"]
    assert "Content-Length" not in headers304


def test_if_modified_since(server: Server, www: Path) -> None:
    """If-Modified-Since at or after the mtime is 304; before it, 200."""
    mtime = os.stat(www / "hello.txt").st_mtime
    assert (
        fetch(server, "/hello.txt", headers={"If-Modified-Since": format_http_date(mtime)})[0]
        == 304
    )
    older = format_http_date(mtime - 60)
    assert fetch(server, "/hello.txt", headers={"If-Modified-Since": older})[0] == 200


def test_if_match_and_if_unmodified_since_give_412_when_the_file_changed(
    server: Server, www: Path
) -> None:
    """A GET naming a version the file no longer has (If-Match), or a date before its last
    change (If-Unmodified-Since), is 412 with no file in it; the current version is 200.
    Preconditions come before If-None-Match and Range."""
    _, headers, _ = fetch(server, "/hello.txt")
    etag = headers["ETag"]
    mtime = os.stat(www / "hello.txt").st_mtime
    before = format_http_date(mtime - 60)
    for fields, status in (
        ({"If-Match": etag}, 200),
        ({"If-Match": "*"}, 200),
        ({"If-Match": '"old"'}, 412),
        ({"If-Match": "W/" + etag}, 412),
        ({"If-Unmodified-Since": format_http_date(mtime)}, 200),
        ({"If-Unmodified-Since": before}, 412),
        ({"If-Match": etag, "If-Unmodified-Since": before}, 200),
        ({"If-Match": '"old"', "If-None-Match": etag}, 412),
        ({"If-Match": '"old"', "Range": "bytes=0-1"}, 412),
        ({"If-Match": etag, "Range": "bytes=0-1"}, 206),
        ({"If-Match": '"old"', "Accept-Encoding": "gzip"}, 412),
    ):
        status_got, got, body = fetch(server, "/hello.txt", headers=fields)
        assert status_got == status, fields
        if status == 412:
            assert b"hello" not in body
            assert got["X-Content-Type-Options"] == "nosniff"
    assert fetch(server, "/hello.txt", "HEAD", {"If-Match": '"old"'})[0] == 412


def test_stale_etag_with_fresh_date_is_200(server: Server, www: Path) -> None:
    """If-None-Match takes precedence: a non-matching tag is 200 even with a recent date."""
    headers = {"If-None-Match": '"nope"', "If-Modified-Since": format_http_date(2**31)}
    assert fetch(server, "/hello.txt", headers=headers)[0] == 200


def test_changed_file_gets_new_etag(server: Server, www: Path) -> None:
    """After the file changes, the old ETag no longer matches."""
    _, headers, _ = fetch(server, "/hello.txt")
    (www / "hello.txt").write_bytes(b"changed content\n")
    status, new_headers, body = fetch(
        server, "/hello.txt", headers={"If-None-Match": headers["ETag"]}
    )
    assert (status, body) == (200, b"changed content\n")
    assert new_headers["ETag"] != headers["ETag"]


def test_folder_index_and_redirect(server: Server) -> None:
    """A folder serves its index.html; without the slash it redirects to it."""
    assert fetch(server, "/docs/")[:3:2] == (200, b"<h1>docs</h1>\n")
    status, headers, _ = fetch(server, "/docs?x=1")
    assert (status, headers["Location"]) == (301, "/docs/?x=1")
    assert fetch(server, "/empty/")[0] == 200  # a listing: see test_listing_*


def test_missing_is_404(server: Server) -> None:
    """Anything missing is 404 Not Found with a short body."""
    status, headers, body = fetch(server, "/nope.txt")
    assert (status, body) == (404, b"404 Not Found\n")
    assert headers["Content-Type"].startswith("text/plain")


def test_upload_temporaries_are_never_served(server: Server, www: Path) -> None:
    """A half-written upload is invisible to GET."""
    (www / (TEMP_PREFIX + "abc")).write_bytes(b"partial")
    assert fetch(server, "/" + TEMP_PREFIX + "abc")[0] == 404


def test_percent_encoded_name(server: Server, www: Path) -> None:
    """Encoded names are decoded once: '%20' is a space, '%2520' a literal '%20'."""
    (www / "a b.txt").write_bytes(b"space")
    (www / "a%20b.txt").write_bytes(b"literal")
    assert fetch(server, "/a%20b.txt")[2] == b"space"
    assert fetch(server, "/a%2520b.txt")[2] == b"literal"


# Hostile targets: none may return a byte from outside the root.
TRAVERSAL = [
    b"/../secret.txt",
    b"/../../../../etc/passwd",
    b"/docs/../../secret.txt",
    b"/%2e%2e/secret.txt",
    b"/%2E%2E/secret.txt",
    b"/%2e%2e%2fsecret.txt",
    b"/..%2fsecret.txt",
    b"/docs/%2e%2e/%2e%2e/secret.txt",
    b"/.%2e/secret.txt",
    b"/%252e%252e/secret.txt",
    b"//etc/passwd",
    b"/%2fetc%2fpasswd",
    b"/./../secret.txt",
    b"/docs/./../../secret.txt",
    b"http://x/../secret.txt",
    b"/link-out",
    b"/link-dir-out/secret.txt",
    b"/docs/../link-out",
    b"/..;/secret.txt",
    b"/...//secret.txt",
    b"/%c0%ae%c0%ae/secret.txt",
    b"/..%00/secret.txt",
    b"/..\\secret.txt",
    b"/..%5csecret.txt",
    b"/C:/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSAL, ids=[t.decode() for t in TRAVERSAL])
def test_traversal_never_escapes(server: Server, www: Path, target: bytes) -> None:
    """Every hostile target is 400 or 404, and never carries the secret."""
    os.symlink(www.parent / "secret.txt", www / "link-out")
    os.symlink(www.parent, www / "link-dir-out")
    status, body = raw_get(server, target)
    assert status in (400, 404)
    assert b"SECRET" not in body


def test_symlink_inside_root_is_served(server: Server, www: Path) -> None:
    """A symlink to a file inside the root is followed."""
    os.symlink(www / "hello.txt", www / "alias.txt")
    assert fetch(server, "/alias.txt")[2] == b"hello, world\n"


def test_fifo_is_404_without_hanging(server: Server, www: Path) -> None:
    """A named pipe in the root is not a file: 404 at once, no worker blocked on it."""
    os.mkfifo(www / "pipe")
    assert fetch(server, "/pipe")[0] == 404
    assert fetch(server, "/hello.txt")[0] == 200


class TestFileCache:
    """Small files are served from memory; every change on disk is seen at once."""

    def test_rewritten_file_is_served_fresh(self, server: Server, www: Path) -> None:
        """Rewriting a cached file (other size, then same size with a new mtime) is seen."""
        assert fetch(server, "/hello.txt")[2] == b"hello, world\n"
        (www / "hello.txt").write_bytes(b"short\n")
        assert fetch(server, "/hello.txt")[2] == b"short\n"
        path = www / "hello.txt"
        before = path.stat()
        path.write_bytes(b"SHORT\n")
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
        assert fetch(server, "/hello.txt")[2] == b"SHORT\n"

    def test_replaced_by_rename_is_served_fresh(self, server: Server, www: Path) -> None:
        """A file replaced atomically (a new inode) is seen."""
        assert fetch(server, "/hello.txt")[2] == b"hello, world\n"
        (www / "new.tmp").write_bytes(b"replaced\n")
        os.replace(www / "new.tmp", www / "hello.txt")
        assert fetch(server, "/hello.txt")[2] == b"replaced\n"

    def test_deleted_file_is_404(self, server: Server, www: Path) -> None:
        """A cached file that is deleted is 404 at once."""
        assert fetch(server, "/hello.txt")[0] == 200
        (www / "hello.txt").unlink()
        assert fetch(server, "/hello.txt")[0] == 404

    def test_folder_swapped_for_symlink_out_is_404(self, server: Server, www: Path) -> None:
        """A cached path whose folder is replaced by a symlink pointing outside the root serves
        nothing from outside, although a file of the same name is there."""
        (www / "sub").mkdir()
        (www / "sub" / "f.txt").write_bytes(b"inside\n")
        assert fetch(server, "/sub/f.txt")[2] == b"inside\n"
        outside = www.parent / "elsewhere"
        outside.mkdir()
        (outside / "f.txt").write_bytes(b"SECRET\n")
        os.rename(www / "sub", www / "old-sub")
        os.symlink(outside, www / "sub")
        status, _, body = fetch(server, "/sub/f.txt")
        assert status == 404
        assert b"SECRET" not in body

    @pytest.mark.parametrize("size", [13, 100_000])  # in memory, and headers only
    def test_file_moved_out_and_linked_back_is_404(
        self, server: Server, www: Path, size: int
    ) -> None:
        """A cached file moved out of the root and replaced by a symlink to it (the very same
        inode, size and mtime) is 404 at once, as it would be uncached: the cache never serves
        a path that is now a symlink leading outside."""
        (www / "f.txt").write_bytes(b"x" * size)
        assert fetch(server, "/f.txt")[0] == 200
        outside = www.parent / "moved.txt"
        os.rename(www / "f.txt", outside)
        os.symlink(outside, www / "f.txt")
        for method in ("GET", "HEAD"):
            status, _, body = fetch(server, "/f.txt", method)
            assert (status, b"x" in body) == (404, False)

    def test_large_file_served_by_sendfile_after_change(self, server: Server, www: Path) -> None:
        """Files above the memory limit keep only headers cached; changes are still seen."""
        big = www / "big.bin"
        big.write_bytes(b"a" * 200_000)
        assert fetch(server, "/big.bin")[2] == b"a" * 200_000
        assert fetch(server, "/big.bin")[2] == b"a" * 200_000
        (www / "big.tmp").write_bytes(b"b" * 150_000)
        os.replace(www / "big.tmp", big)
        status, headers, body = fetch(server, "/big.bin")
        assert (status, body) == (200, b"b" * 150_000)
        assert headers["Content-Length"] == "150000"

    def test_pipelined_cached_responses_in_order(self, server: Server, www: Path) -> None:
        """Pipelined GETs of cached files, answered from memory and written together, come
        back complete and in order."""
        (www / "other.txt").write_bytes(b"other\n")
        fetch(server, "/other.txt")
        fetch(server, "/hello.txt")
        with connect(server) as sock:
            sock.sendall(
                b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /other.txt HTTP/1.1\r\nHost: x\r\n\r\n" * 10
            )
            reader = WireReader(sock)
            bodies = [reader.read().body for _ in range(20)]
        assert bodies == [b"hello, world\n", b"other\n"] * 10


@pytest.mark.parametrize(
    "target", [b"//evil.example/..", b"/%2Fevil.example/..", b"//evil.example/%2e%2e"]
)
def test_folder_redirect_stays_on_this_host(server: Server, target: bytes) -> None:
    """A folder redirect never names another host (no '//host' Location: an open redirect)."""
    with connect(server) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        response = WireReader(sock).read()
    assert response.status == 301
    location = response.header("Location")
    assert location is not None
    assert urljoin("http://x/", location).startswith("http://x/")


@contextmanager
def _serving_64_mib(
    tmp_path: Path,
) -> Iterator[tuple[http.client.HTTPConnection, subprocess.Popen[str]]]:
    """``webserver run`` serving a 64 MiB random ``/big.bin``, and a connection to it that has
    made one request already (so the peak memory measured next is the serving's alone)."""
    root = tmp_path / "root"
    root.mkdir()
    with (root / "big.bin").open("wb") as handle:
        for _ in range(64):
            handle.write(os.urandom(1 << 20))
    with webserver_process("--port", "0", "--root", str(root), "--no-access-log") as (proc, m):
        conn = http.client.HTTPConnection("127.0.0.1", int(m["port"]), timeout=NET_TIMEOUT)
        try:
            conn.request("GET", "/warm-up")
            conn.getresponse().read()
            yield conn, proc
        finally:
            conn.close()


def test_a_large_file_does_not_grow_memory_by_its_size(tmp_path: Path) -> None:
    """A file above the in-memory limit goes out by sendfile: serving 64 MiB raises the server
    process's peak memory by far less than its size (the limit here is 8 MiB)."""
    with _serving_64_mib(tmp_path) as (conn, proc):
        before = peak_rss_kib(proc.pid)
        conn.request("GET", "/big.bin")
        response = conn.getresponse()
        received = 0
        while chunk := response.read(1 << 20):
            received += len(chunk)
        after = peak_rss_kib(proc.pid)
    assert response.status == 200
    assert received == 64 << 20
    assert after - before < 8 << 10, f"peak RSS grew by {(after - before) >> 10} MiB"


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The (Content-Range, bytes) of each part of a multipart/byteranges body."""
    match = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", content_type)
    assert match, content_type
    delimiter = b"\r\n--" + match.group(1).encode()
    assert body.startswith(delimiter) and body.endswith(delimiter + b"--\r\n")
    parts = []
    for chunk in body[len(delimiter) : -len(delimiter + b"--\r\n")].split(delimiter):
        head, _, data = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n") if line)
        parts.append((fields["Content-Range"], data))
    return parts


class TestRanges:
    """Range requests: 206 single and multipart, 416, If-Range, HEAD, small and large files."""

    @pytest.mark.parametrize("name", ["hello.txt", "big.bin"])
    def test_single_range(self, server: Server, www: Path, name: str) -> None:
        """One range is a 206 with exactly those bytes and a Content-Range; a small (cached)
        and a large (sendfile) file alike, also when asked twice."""
        (www / "big.bin").write_bytes(os.urandom(300_000))
        data = (www / name).read_bytes()
        for _ in range(2):
            status, headers, body = fetch(server, "/" + name, headers={"Range": "bytes=3-9"})
            assert (status, body) == (206, data[3:10])
            assert headers["Content-Range"] == f"bytes 3-9/{len(data)}"
            assert headers["Content-Length"] == "7"
            assert headers["Accept-Ranges"] == "bytes"

    @pytest.mark.parametrize(
        ("spec", "start", "stop"), [("bytes=-4", 9, 13), ("bytes=5-", 5, 13), ("bytes=0-99", 0, 13)]
    )
    def test_suffix_and_open_ranges(self, server: Server, spec: str, start: int, stop: int) -> None:
        """Suffix, open and too-long ranges select the right bytes."""
        status, headers, body = fetch(server, "/hello.txt", headers={"Range": spec})
        assert (status, body) == (206, b"hello, world\n"[start:stop])
        assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/13"

    def test_several_ranges_are_multipart(self, server: Server, www: Path) -> None:
        """Several ranges are one multipart/byteranges body with each part's type and range,
        its Content-Length exact."""
        data = (www / "data.bin").read_bytes()
        status, headers, body = fetch(
            server, "/data.bin", headers={"Range": "bytes=0-1,100-199,-3"}
        )
        assert status == 206
        assert headers["Content-Length"] == str(len(body))
        assert parse_multipart(headers["Content-Type"], body) == [
            ("bytes 0-1/16384", data[0:2]),
            ("bytes 100-199/16384", data[100:200]),
            ("bytes 16381-16383/16384", data[-3:]),
        ]
        assert b"Content-Type: application/octet-stream\r\n" in body

    def test_abusive_ranges_get_the_whole_file(self, server: Server, www: Path) -> None:
        """17 ranges, or overlapping ranges adding up past the file, get one 200 whole."""
        data = (www / "data.bin").read_bytes()
        many = "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 34, 2))
        for spec in (many, "bytes=0-,0-,0-"):
            status, _, body = fetch(server, "/data.bin", headers={"Range": spec})
            assert (status, body) == (200, data)

    def test_unsatisfiable_is_416(self, server: Server) -> None:
        """A range past the end is 416 with Content-Range: bytes */LEN."""
        status, headers, _ = fetch(server, "/hello.txt", headers={"Range": "bytes=13-"})
        assert (status, headers["Content-Range"]) == (416, "bytes */13")
        assert headers["X-Content-Type-Options"] == "nosniff"

    def test_if_range(self, server: Server, www: Path) -> None:
        """If-Range with the current ETag or date applies the range; a stale one gets 200."""
        _, headers, _ = fetch(server, "/hello.txt")
        for validator, status in (
            (headers["ETag"], 206),
            (headers["Last-Modified"], 206),
            ('"stale"', 200),
            (format_http_date(2**31), 200),
        ):
            asked = {"Range": "bytes=0-4", "If-Range": validator}
            assert fetch(server, "/hello.txt", headers=asked)[0] == status

    def test_head_range(self, server: Server) -> None:
        """HEAD with a Range has the 206's headers and no body."""
        status, headers, body = fetch(
            server, "/hello.txt", method="HEAD", headers={"Range": "bytes=0-4"}
        )
        assert (status, body, headers["Content-Length"]) == (206, b"", "5")
        assert headers["Content-Range"] == "bytes 0-4/13"
        status, headers, body = fetch(
            server, "/hello.txt", method="HEAD", headers={"Range": "bytes=0-1,4-5"}
        )
        assert (status, body) == (206, b"")
        assert headers["Content-Type"].startswith("multipart/byteranges; boundary=")

    def test_not_modified_wins_over_range(self, server: Server) -> None:
        """A matching If-None-Match is 304 even with a Range."""
        etag = fetch(server, "/hello.txt")[1]["ETag"]
        asked = {"If-None-Match": etag, "Range": "bytes=0-1"}
        assert fetch(server, "/hello.txt", headers=asked)[0] == 304

    def test_ignored_range_is_200(self, server: Server) -> None:
        """A malformed Range or another unit is ignored: 200 whole."""
        for spec in ("bytes=5-1", "lines=1-2", "bytes=x"):
            assert fetch(server, "/hello.txt", headers={"Range": spec})[:3:2] == (
                200,
                b"hello, world\n",
            )

    def test_range_of_a_cached_file_reads_the_file_changed_meanwhile(
        self, server: Server, www: Path
    ) -> None:
        """A range of a cached small file comes from the current file, never a stale copy."""
        assert fetch(server, "/hello.txt")[2] == b"hello, world\n"
        (www / "hello.txt").write_bytes(b"HELLO, WORLD\n")
        assert fetch(server, "/hello.txt", headers={"Range": "bytes=0-4"})[2] == b"HELLO"


def test_nosniff_on_every_static_response(server: Server) -> None:
    """Files, 304s, HEADs, 206s and listings all carry X-Content-Type-Options: nosniff."""
    etag = fetch(server, "/hello.txt")[1]["ETag"]
    for target, method, headers in (
        ("/hello.txt", "GET", {}),
        ("/data.bin", "HEAD", {}),
        ("/hello.txt", "GET", {"If-None-Match": etag}),
        ("/hello.txt", "GET", {"Range": "bytes=0-1"}),
        ("/", "GET", {}),
    ):
        assert fetch(server, target, method, headers)[1]["X-Content-Type-Options"] == "nosniff"


class TestListing:
    """A folder without index.html lists its entries, as HTML or JSON."""

    def test_html_listing(self, server: Server, www: Path) -> None:
        """The root lists folders then files, linked relatively, as UTF-8 HTML."""
        (www / "a b#1.txt").write_bytes(b"x")
        status, headers, body = fetch(server, "/")
        assert status == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        page = body.decode()
        order = [page.index(f'href="{h}"') for h in ("docs/", "empty/", "a%20b%231.txt")]
        assert order == sorted(order)
        assert 'href="../"' not in page
        assert 'href="../"' in fetch(server, "/empty/")[2].decode()

    def test_json_listing(self, server: Server) -> None:
        """?format=json and Accept: application/json give the entries as JSON."""
        for target, headers in (("/?format=json", {}), ("/", {"Accept": "application/json"})):
            status, got, body = fetch(server, target, headers=headers)
            assert (status, got["Content-Type"]) == (200, "application/json")
            names = [e["name"] for e in json.loads(body)["entries"]]
            assert names == ["docs", "empty", "data.bin", "hello.txt"]

    def test_listing_etag_and_304(self, server: Server, www: Path) -> None:
        """A listing has an ETag; asking again with it is 304 until the folder changes."""
        etag = fetch(server, "/")[1]["ETag"]
        assert fetch(server, "/", headers={"If-None-Match": etag})[0] == 304
        (www / "new.txt").write_bytes(b"n")
        assert fetch(server, "/", headers={"If-None-Match": etag})[0] == 200

    def test_no_listing_is_404(self, www: Path) -> None:
        """With listings off a folder without index.html is 404."""
        with running_server(root=www, access_log=False, listing=False) as srv:
            assert fetch(srv, "/")[0] == 404
            assert fetch(srv, "/docs/")[0] == 200

    def test_upload_form_unless_read_only(self, server: Server, www: Path) -> None:
        """A listing carries the multipart upload form while uploads are on; with read_only
        it does not."""
        form = '<form method="post" enctype="multipart/form-data">'
        assert form in fetch(server, "/empty/")[2].decode()
        with running_server(root=www, access_log=False, read_only=True) as srv:
            assert form not in fetch(srv, "/empty/")[2].decode()

    def test_symlink_out_and_temporaries_are_not_listed(self, server: Server, www: Path) -> None:
        """Names GET would not serve (a link out of the root, an upload temporary) are not
        listed."""
        os.symlink(www.parent / "secret.txt", www / "out.txt")
        (www / (TEMP_PREFIX + "x")).write_bytes(b"")
        page = fetch(server, "/")[2].decode()
        assert "out.txt" not in page and TEMP_PREFIX not in page


class TestHidden:
    """Dot-names are 404 and unlisted by default; /.well-known/ is always served."""

    @pytest.fixture
    def hidden(self, www: Path) -> Path:
        (www / ".git").mkdir()
        (www / ".git" / "config").write_bytes(b"[core]\n")
        (www / ".env").write_bytes(b"KEY=1\n")
        (www / ".well-known").mkdir()
        (www / ".well-known" / "security.txt").write_bytes(b"Contact: x\n")
        (www / ".well-known" / ".private").write_bytes(b"no\n")
        os.symlink(www / ".env", www / "env-link")
        return www

    def test_hidden_by_default(self, server: Server, hidden: Path) -> None:
        """.env, .git/config, a link to a dot-file and a dot-name under .well-known are 404;
        none is listed; .well-known/security.txt is served."""
        for target in ("/.env", "/.git/config", "/.git/", "/env-link", "/.well-known/.private"):
            assert fetch(server, target)[0] == 404, target
        assert fetch(server, "/docs/../.env")[0] == 404
        assert fetch(server, "/.well-known/security.txt")[:3:2] == (200, b"Contact: x\n")
        assert b".git" not in fetch(server, "/")[2]
        assert b".env" not in fetch(server, "/?format=json")[2]

    def test_show_hidden(self, hidden: Path) -> None:
        """With show_hidden dot-names are served and listed."""
        with running_server(root=hidden, access_log=False, show_hidden=True) as srv:
            assert fetch(srv, "/.env")[:3:2] == (200, b"KEY=1\n")
            assert fetch(srv, "/.git/config")[0] == 200
            assert b'href=".git/"' in fetch(srv, "/")[2]
            assert fetch(srv, "/" + TEMP_PREFIX + "x")[0] == 404


def test_ranged_responses_do_not_grow_memory_by_their_size(tmp_path: Path) -> None:
    """A 48 MiB single range (sendfile from the offset) and a multipart response of two 24 MiB
    ranges (read 64 KiB at a time) raise the server's peak memory by far less than their size."""
    with _serving_64_mib(tmp_path) as (conn, proc):
        before = peak_rss_kib(proc.pid)
        received = []
        for spec in (f"bytes={8 << 20}-{(56 << 20) - 1}", f"bytes=0-{(24 << 20) - 1},-{24 << 20}"):
            conn.request("GET", "/big.bin", headers={"Range": spec})
            response = conn.getresponse()
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
            received.append((response.status, total))
        after = peak_rss_kib(proc.pid)
    assert received[0] == (206, 48 << 20)
    assert received[1][0] == 206 and received[1][1] > 48 << 20
    assert after - before < 8 << 10, f"peak RSS grew by {(after - before) >> 10} MiB"


# Compression: precompressed siblings and gzip on the fly (webserver.encoding decides the coding).

PAGE = b"function f() { return 1; }\n" * 200


@pytest.fixture
def coded(www: Path) -> Path:
    """A script big enough to compress, a stylesheet with a .gz and a .br sibling, an image."""
    (www / "app.js").write_bytes(PAGE)
    (www / "site.css").write_bytes(b"p { color: red }\n" * 100)
    (www / "site.css.gz").write_bytes(gzip.compress((www / "site.css").read_bytes()))
    (www / "site.css.br").write_bytes(b"pretend brotli bytes")
    (www / "photo.png").write_bytes(b"\x89PNG" + bytes(4000))
    return www


def test_gzip_on_the_fly(server: Server, coded: Path) -> None:
    """A compressible file is gzipped for a client that accepts gzip, with Vary and an ETag of
    its own, and decodes to the file."""
    _, plain, _ = fetch(server, "/app.js")
    status, headers, body = fetch(server, "/app.js", headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == PAGE
    assert len(body) < len(PAGE)
    assert headers["ETag"] != plain["ETag"]
    assert plain["Vary"] == "Accept-Encoding"
    assert "Content-Encoding" not in plain


def test_gzip_variant_revalidates(server: Server, coded: Path) -> None:
    """The gzip variant's ETag gives 304 for that variant, and not for the identity one."""
    gz = {"Accept-Encoding": "gzip"}
    _, headers, _ = fetch(server, "/app.js", headers=gz)
    status, again, body = fetch(server, "/app.js", headers={**gz, "If-None-Match": headers["ETag"]})
    assert (status, body) == (304, b"")
    assert again["ETag"] == headers["ETag"]
    assert again["Vary"] == "Accept-Encoding"
    status, _, body = fetch(server, "/app.js", headers={"If-None-Match": headers["ETag"]})
    assert (status, body) == (200, PAGE)


def test_precompressed_sibling(server: Server, coded: Path) -> None:
    """A .br sibling is preferred, a .gz one when br is refused; each with Content-Encoding, the
    original's type and an ETag of its own that revalidates."""
    status, headers, body = fetch(server, "/site.css", headers={"Accept-Encoding": "gzip, br"})
    assert (status, headers["Content-Encoding"], body) == (200, "br", b"pretend brotli bytes")
    assert headers["Content-Type"] == "text/css; charset=utf-8"
    ae = {"Accept-Encoding": "gzip, br;q=0"}
    status, headers, body = fetch(server, "/site.css", headers=ae)
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    assert body == (coded / "site.css.gz").read_bytes()
    assert headers["Content-Length"] == str(len(body))
    assert headers["Vary"] == "Accept-Encoding"
    _, direct, _ = fetch(server, "/site.css.gz")
    assert headers["ETag"] not in (direct["ETag"], fetch(server, "/site.css")[1]["ETag"])
    status, _, body = fetch(server, "/site.css", headers={**ae, "If-None-Match": headers["ETag"]})
    assert (status, body) == (304, b"")


@pytest.mark.parametrize(
    "accept", ["gzip;q=0", "identity", "deflate", "*;q=0", "br;q=0, gzip;q=0, identity;q=0"]
)
def test_refused_codings_get_identity(server: Server, coded: Path, accept: str) -> None:
    """A client that refuses gzip (q=0, or by not listing it) gets the file as it is."""
    status, headers, body = fetch(server, "/app.js", headers={"Accept-Encoding": accept})
    assert (status, body) == (200, PAGE)
    assert "Content-Encoding" not in headers


def test_range_is_never_compressed(server: Server, coded: Path) -> None:
    """A Range request gets the identity bytes, even from a client that accepts gzip."""
    headers = {"Accept-Encoding": "gzip, br", "Range": "bytes=0-9"}
    for name in ("/app.js", "/site.css"):
        status, got, body = fetch(server, name, headers=headers)
        assert (status, body) == (206, (coded / name[1:]).read_bytes()[:10])
        assert "Content-Encoding" not in got


@pytest.mark.parametrize("name", ["/photo.png", "/hello.txt"])
def test_not_compressed_when_it_does_not_pay(server: Server, coded: Path, name: str) -> None:
    """An image (already compressed type) and a file under 1 KiB go out as they are, without
    Vary."""
    status, headers, body = fetch(server, name, headers={"Accept-Encoding": "gzip"})
    assert (status, body) == (200, (coded / name[1:]).read_bytes())
    assert "Content-Encoding" not in headers
    assert "Vary" not in headers


def test_large_file_gzipped_as_a_stream(server: Server, www: Path) -> None:
    """A file above the in-memory cache is gzipped a piece at a time, sent chunked."""
    data = b"".join(b"%d\n" % i for i in range(300_000))
    (www / "log.txt").write_bytes(data)
    status, headers, body = fetch(server, "/log.txt", headers={"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Transfer-Encoding"] == "chunked"
    assert gzip.decompress(body) == data


def test_head_of_gzip_variant(server: Server, coded: Path) -> None:
    """HEAD with Accept-Encoding gets the variant's head and no body."""
    status, headers, body = fetch(
        server, "/app.js", method="HEAD", headers={"Accept-Encoding": "gzip"}
    )
    assert (status, headers["Content-Encoding"], body) == (200, "gzip", b"")


def test_no_compress_keeps_siblings(coded: Path) -> None:
    """With compression off nothing is gzipped on the fly, but siblings are still sent."""
    with running_server(root=coded, access_log=False, compress=False) as srv:
        _, headers, body = fetch(srv, "/app.js", headers={"Accept-Encoding": "gzip"})
        assert body == PAGE
        assert "Content-Encoding" not in headers
        assert "Vary" not in headers
        _, headers, _ = fetch(srv, "/site.css", headers={"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip"


def test_only_static_files_are_compressed(www: Path) -> None:
    """A handler's response mixing a secret with reflected request text, and a listing, go out
    uncompressed even to a client that accepts gzip: the length of a compressed body cannot
    leak a secret (BREACH)."""
    from webserver import Handler, Response

    class Reflect(Handler):
        def get(self, request: Request) -> Response:
            return Response.text(f"token=s3cr3t-{'x' * 2000}\nyou asked for {request.query}\n")

    (www / "many").mkdir()
    for i in range(60):
        (www / "many" / f"file-{i:03}.txt").write_bytes(b"")
    gz = {"Accept-Encoding": "gzip"}
    with serving(www, "/reflect", Reflect()) as srv:
        status, headers, body = fetch(srv, "/reflect?token=s3cr3t-a", headers=gz)
        assert (status, body.startswith(b"token=s3cr3t-")) == (200, True)
        assert "Content-Encoding" not in headers
        status, headers, body = fetch(srv, "/many/", headers=gz)
        assert (status, b"file-059.txt" in body) == (200, True)
        assert len(body) > 1024 and "Content-Encoding" not in headers


def test_sibling_symlink_out_of_root_is_ignored(server: Server, www: Path) -> None:
    """A .gz sibling that is a symlink leading outside the root is never sent."""
    (www / "notes.txt").write_bytes(b"notes\n")
    (www / "notes.txt.gz").symlink_to(www.parent / "secret.txt")
    status, headers, body = fetch(server, "/notes.txt", headers={"Accept-Encoding": "gzip"})
    assert (status, body) == (200, b"notes\n")
    assert "Content-Encoding" not in headers


def _request(path: str, *fields: tuple[str, str]) -> Request:
    return Request(
        method="GET",
        target=path,
        path=path,
        query="",
        headers=Headers([("host", "x"), *fields]),
        http_version="1.1",
        client=("127.0.0.1", 1),
    )


class TestFromMemory:
    """What the selector thread may answer itself: a cached small file, nothing else."""

    def test_a_cached_file_is_answered_as_get_answers_it(self, www: Path) -> None:
        """Not before ``get`` has cached the file; then the same status, fields and body."""
        files = StaticFiles(www)
        assert files.from_memory(_request("/hello.txt")) is None
        by_get = files.get(_request("/hello.txt"))
        by_memory = files.from_memory(_request("/hello.txt"))
        assert by_memory is not None
        assert (by_memory.status, by_memory.headers, by_memory.body) == (
            by_get.status,
            by_get.headers,
            by_get.body,
        )
        etag = dict(by_get.headers)["ETag"]
        unchanged = files.from_memory(_request("/hello.txt", ("if-none-match", etag)))
        assert unchanged is not None
        assert (unchanged.status, unchanged.body) == (304, b"")

    @pytest.mark.parametrize(
        "field", [("accept-encoding", "gzip"), ("accept-encoding", "identity"), ("range", "0-1")]
    )
    def test_a_coding_or_a_range_is_left_to_a_worker(
        self, www: Path, field: tuple[str, str]
    ) -> None:
        """A coding to choose (siblings to look for) or a range is not answered from memory."""
        files = StaticFiles(www)
        files.get(_request("/hello.txt"))
        assert files.from_memory(_request("/hello.txt", field)) is None

    def test_a_changed_large_or_swapped_file_is_left_to_a_worker(self, www: Path) -> None:
        """A file changed on disk since it was cached, a file too large to keep in memory, and
        a path whose folder now leads outside the root are not answered from memory."""
        files = StaticFiles(www)
        (www / "sub").mkdir()
        (www / "sub" / "f.txt").write_bytes(b"inside\n")
        (www / "big.bin").write_bytes(b"a" * (files.cache_file_limit + 1))
        for path in ("/hello.txt", "/sub/f.txt", "/big.bin"):
            files.get(_request(path)).close_body()
        (www / "hello.txt").write_bytes(b"changed, and longer\n")
        outside = www.parent / "elsewhere"
        outside.mkdir()
        (outside / "f.txt").write_bytes(b"inside\n")
        os.rename(www / "sub", www / "old-sub")
        os.symlink(outside, www / "sub")
        for path in ("/hello.txt", "/sub/f.txt", "/big.bin"):
            assert files.from_memory(_request(path)) is None

    def test_hidden_names_are_refused_as_get_refuses_them(self, www: Path) -> None:
        """A dot-name is 404 from memory too."""
        (www / ".env").write_bytes(b"SECRET=1\n")
        with pytest.raises(NotFound):
            StaticFiles(www).from_memory(_request("/.env"))
