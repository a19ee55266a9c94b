"""GET and HEAD of files: headers, conditional requests, folders, and path traversal."""

from __future__ import annotations

import http.client
import os
from pathlib import Path
from urllib.parse import urljoin

import pytest

from webserver import Server
from webserver.httpdate import format_http_date, parse_http_date
from webserver.paths import TEMP_PREFIX

from .conftest import NET_TIMEOUT, connect, peak_rss_kib, webserver_process
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
    assert fetch(server, "/empty/")[0] == 404
    assert fetch(server, "/")[0] == 404


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


def test_a_large_file_does_not_grow_memory_by_its_size(tmp_path: Path) -> None:
    """A file above the in-memory limit goes out by sendfile: serving 64 MiB raises the server
    process's peak memory by far less than its size (the limit here is 8 MiB)."""
    size = 64 << 20
    root = tmp_path / "root"
    root.mkdir()
    with (root / "big.bin").open("wb") as handle:
        for _ in range(size >> 20):
            handle.write(os.urandom(1 << 20))
    with webserver_process("--port", "0", "--root", str(root), "--no-access-log") as (proc, m):
        conn = http.client.HTTPConnection("127.0.0.1", int(m["port"]), timeout=NET_TIMEOUT)
        conn.request("GET", "/warm-up")
        conn.getresponse().read()
        before = peak_rss_kib(proc.pid)
        conn.request("GET", "/big.bin")
        response = conn.getresponse()
        received = 0
        while chunk := response.read(1 << 20):
            received += len(chunk)
        conn.close()
        after = peak_rss_kib(proc.pid)
    assert response.status == 200
    assert received == size
    assert after - before < 8 << 10, f"peak RSS grew by {(after - before) >> 10} MiB"
