"""POST and PUT uploads: exact content, no overwrite (POST), atomic replacement (PUT),
preconditions, read-only mode, limits and bad names."""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from webserver import Server
from webserver._spool import MEMORY_LIMIT, locked_temp_file
from webserver._spool import TEMP_PREFIX as SPOOL_PREFIX
from webserver.conditional import make_etag
from webserver.headers import Headers
from webserver.httpdate import format_http_date
from webserver.paths import MAX_UPLOAD_DEPTH, MAX_UPLOAD_PATH_BYTES, TEMP_PREFIX
from webserver.testing import running_server
from webserver.uploads import IN_PROGRESS_FOLDER, put_precondition_failed

from .conftest import NET_TIMEOUT, connect, open_fds, peak_rss_kib, webserver_process
from .wire import WireReader


def post(
    server: Server,
    target: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.listen()
    conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def leftovers(root: Path) -> list[Path]:
    """Upload temporaries and spooled bodies anywhere under root (the in-progress folder itself
    stays once made)."""
    return [
        p
        for p in root.rglob("*")
        if p.name.startswith((TEMP_PREFIX, SPOOL_PREFIX)) and p.name != IN_PROGRESS_FOLDER
    ]


@pytest.fixture
def small_limit_server(www: Path) -> Iterator[Server]:
    with running_server(root=www, max_upload=1000, access_log=False) as srv:
        yield srv


def test_stored_byte_exact(server: Server, www: Path) -> None:
    """The body lands under the root byte for byte; Location names it."""
    payload = os.urandom(300_000)
    status, headers, _ = post(server, "/new.bin", payload)
    assert status == 201
    assert headers["Location"] == "/new.bin"
    assert (www / "new.bin").read_bytes() == payload
    assert (www / "new.bin").stat().st_mode & 0o777 == 0o644
    assert leftovers(www) == []


def test_nested_folders_created(server: Server, www: Path) -> None:
    """Parent folders named in the path are created inside the root."""
    status, headers, _ = post(server, "/a/b/c.txt", b"deep")
    assert (status, headers["Location"]) == (201, "/a/b/c.txt")
    assert (www / "a" / "b" / "c.txt").read_bytes() == b"deep"


def test_never_overwrites(server: Server, www: Path) -> None:
    """An existing name gets a numbered sibling; the original is untouched."""
    locations = [post(server, "/hello.txt", f"v{i}".encode())[1]["Location"] for i in range(3)]
    assert locations == ["/hello-1.txt", "/hello-2.txt", "/hello-3.txt"]
    assert (www / "hello.txt").read_bytes() == b"hello, world\n"
    assert (www / "hello-2.txt").read_bytes() == b"v1"


def test_location_is_percent_encoded(server: Server, www: Path) -> None:
    """A name with spaces is stored as such and Location is a valid URL path."""
    status, headers, _ = post(server, "/my%20file.txt", b"x")
    assert (status, headers["Location"]) == (201, "/my%20file.txt")
    assert (www / "my file.txt").read_bytes() == b"x"


def test_chunked_upload(server: Server, www: Path) -> None:
    """A chunked body is stored whole."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /chunked.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        assert WireReader(sock).read().status == 201
    assert (www / "chunked.txt").read_bytes() == b"hello world"


def test_disconnect_midway_leaves_nothing(server: Server, www: Path) -> None:
    """A client that vanishes mid-body leaves no file, no temporary and no descriptor."""
    before = open_fds()
    with connect(server) as sock:
        sock.sendall(b"POST /partial.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        sock.sendall(b"x" * 50_000)
    # The server answers other clients, and by then the abandoned upload is cleaned up.
    status, _, _ = post(server, "/after.txt", b"ok")
    assert status == 201
    for _ in range(200):
        if not leftovers(www) and open_fds() <= before:
            break
        # Cleanup runs on the worker that saw the disconnect; ask again over the network.
        post(server, "/probe.txt", b"")
    assert not (www / "partial.bin").exists()
    assert leftovers(www) == []


def test_a_compressed_body_is_stored_as_sent(small_limit_server: Server, www: Path) -> None:
    """A body sent with ``Content-Encoding: gzip`` is stored byte for byte as it came, never
    inflated, so a small "zip bomb" stays small and --max-upload counts what is stored."""
    import gzip

    bomb = gzip.compress(b"\0" * 900_000)
    assert len(bomb) < 1000
    status, _, _ = post(small_limit_server, "/bomb.gz", bomb, {"Content-Encoding": "gzip"})
    assert status == 201
    assert (www / "bomb.gz").read_bytes() == bomb


def test_too_large_by_content_length(small_limit_server: Server, www: Path) -> None:
    """Content-Length over the limit is 413 before any byte is stored."""
    with connect(small_limit_server) as sock:
        sock.sendall(b"POST /big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
        response = WireReader(sock).read()
    assert response.status == 413
    assert response.header("Connection") == "close"
    assert not (www / "big.bin").exists()
    assert leftovers(www) == []


def test_too_large_chunked(small_limit_server: Server, www: Path) -> None:
    """A chunked body is counted as it arrives and cut off at the limit with 413."""
    with connect(small_limit_server) as sock:
        sock.sendall(b"POST /big.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            sock.sendall(b"200\r\n" + b"y" * 512 + b"\r\n")
        response = WireReader(sock).read()
    assert response.status == 413
    assert not (www / "big.bin").exists()
    assert leftovers(www) == []


def test_at_limit_is_accepted(small_limit_server: Server, www: Path) -> None:
    """Exactly the limit is fine."""
    assert post(small_limit_server, "/edge.bin", b"z" * 1000)[0] == 201


def test_expect_100_continue_413_without_body(small_limit_server: Server) -> None:
    """With Expect: 100-continue an oversized upload is refused before the body is sent."""
    with connect(small_limit_server) as sock:
        sock.sendall(
            b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        assert WireReader(sock).read().status == 413


def test_expect_100_continue_accepted(server: Server, www: Path) -> None:
    """With Expect: 100-continue an acceptable upload gets 100, then 201."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /cont.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        reader = WireReader(sock)
        assert reader.read().status == 100
        sock.sendall(b"data")
        assert reader.read().status == 201
    assert (www / "cont.txt").read_bytes() == b"data"


BAD_NAMES = [
    "/",
    "/folder/",
    "/a//b.txt",
    "/../escape.txt",
    "/a/../../escape.txt",
    "/%2e%2e/escape.txt",
    "/x%00y",
    "/x%0ay",
    "/x%1by",
    "/" + "n" * 256,
    "/a%5cb",
    "/" + TEMP_PREFIX + "x",
]


@pytest.mark.parametrize("target", BAD_NAMES)
def test_bad_names_are_400(server: Server, www: Path, target: str) -> None:
    """Hostile or ambiguous upload names are refused and nothing is written."""
    before = sorted(p.relative_to(www) for p in www.rglob("*"))
    status, _, _ = post(server, target, b"payload")
    assert status == 400
    assert sorted(p.relative_to(www) for p in www.rglob("*")) == before
    assert not (www.parent / "escape.txt").exists()


def test_parent_is_a_file_is_409(server: Server, www: Path) -> None:
    """A path through an existing file cannot be created."""
    assert post(server, "/hello.txt/child", b"x")[0] == 409


def test_symlinked_folder_out_of_root_is_refused(server: Server, www: Path) -> None:
    """An upload through a symlink to a folder outside the root writes nothing there."""
    outside = www.parent / "outside"
    outside.mkdir()
    os.symlink(outside, www / "out")
    status, _, _ = post(server, "/out/x.txt", b"x")
    assert status == 404
    assert list(outside.iterdir()) == []


def test_keep_alive_after_upload(server: Server, www: Path) -> None:
    """An upload and a GET share one connection."""
    host, port = server.listen()
    conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
    try:
        conn.request("POST", "/ka.txt", body=b"kept")
        first = conn.getresponse()
        first.read()
        sock_before = conn.sock
        conn.request("GET", "/ka.txt")
        second = conn.getresponse()
        assert (first.status, second.status, second.read()) == (201, 200, b"kept")
        assert conn.sock is sock_before
    finally:
        conn.close()


def test_unread_body_on_get_is_drained(server: Server) -> None:
    """A GET carrying a small body is answered and the connection stays usable."""
    with connect(server) as sock:
        sock.sendall(
            b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde"
            b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        reader = WireReader(sock)
        assert [reader.read().status, reader.read().status] == [200, 200]


def test_socket_is_closed_after_413(small_limit_server: Server) -> None:
    """After refusing a body the server closes instead of reading it as a next request."""
    with connect(small_limit_server) as sock:
        sock.sendall(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n".ljust(2000, b"x"))
        reader = WireReader(sock)
        assert reader.read().status == 413
        sock.settimeout(NET_TIMEOUT)
        try:
            assert reader.at_eof()
        except ConnectionResetError:
            pass  # also acceptable: the connection is gone either way
        except TimeoutError:  # pragma: no cover - the failure this test looks for
            pytest.fail("connection left open after 413")


def test_disk_full_is_507_and_temp_removed(
    server: Server, www: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When the disk fills mid-upload the client gets 507, the log says why, and the
    temporary file is gone."""
    made: list[str] = []

    def temp_on_full_disk(folder: str, prefix: str) -> tuple[int, str]:
        fd, path = locked_temp_file(folder, prefix)
        os.close(fd)
        made.append(path)
        return os.open("/dev/full", os.O_WRONLY), path  # every write fails with ENOSPC

    monkeypatch.setattr("webserver.uploads.locked_temp_file", temp_on_full_disk)
    # Under the spool's memory limit, so the handler writes the file itself.
    status, _, body = post(server, "/full.bin", os.urandom(50_000))
    assert status == 507
    assert b"no space" in body
    assert "disk full" in caplog.text
    assert made and not any(Path(p).exists() for p in made)
    assert not (www / "full.bin").exists()


def test_permission_denied_is_500_with_log(
    server: Server, www: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder the server may not write to: 500, a log line, nothing stored."""

    def refuse(folder: str, prefix: str) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied", folder)

    monkeypatch.setattr("webserver.uploads.locked_temp_file", refuse)
    status, _, _ = post(server, "/denied.txt", b"x")
    assert status == 500
    assert "upload failed" in caplog.text and "Permission denied" in caplog.text
    assert not (www / "denied.txt").exists()


def test_stalled_body_gets_408(www: Path) -> None:
    """An upload whose body stops arriving is answered 408 after the body timeout, and the
    temporary file is removed."""
    with (
        running_server(root=www, body_timeout=0.3, access_log=False) as server,
        connect(server) as sock,
    ):
        sock.sendall(b"POST /stall.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        response = WireReader(sock).read()
    assert response.status == 408
    assert response.header("Connection") == "close"
    assert not (www / "stall.txt").exists()
    assert leftovers(www) == []


def test_many_uploads_of_one_name_get_fresh_numbers(server: Server, www: Path) -> None:
    """Repeated uploads of one name each get a new number, even when some earlier numbered
    files were deleted meanwhile; nothing is ever overwritten."""
    locations = [post(server, "/many.txt", f"{i}".encode())[1]["Location"] for i in range(5)]
    assert locations == ["/many.txt", "/many-1.txt", "/many-2.txt", "/many-3.txt", "/many-4.txt"]
    (www / "many-4.txt").unlink()
    (www / "many-9.txt").write_bytes(b"made by hand")
    more = [post(server, "/many.txt", b"x")[1]["Location"] for _ in range(6)]
    assert len(set(more)) == 6
    assert "/many-9.txt" not in more
    assert (www / "many-9.txt").read_bytes() == b"made by hand"
    assert (www / "many.txt").read_bytes() == b"0"


def test_a_large_upload_does_not_grow_memory_by_its_size(tmp_path: Path) -> None:
    """The body streams from the socket to the file: a 256 MiB upload raises the server
    process's peak memory by far less than its size (the limit here is 32 MiB)."""
    size = 256 << 20
    root = tmp_path / "root"
    root.mkdir()
    with webserver_process("--port", "0", "--root", str(root), "--no-access-log") as (proc, m):
        port = int(m["port"])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=NET_TIMEOUT)
        conn.request("GET", "/warm-up")  # loads what a request needs before the baseline
        conn.getresponse().read()
        before = peak_rss_kib(proc.pid)
        block = os.urandom(1 << 20)
        conn.putrequest("POST", "/big.bin")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        for _ in range(size // len(block)):
            conn.send(block)
        response = conn.getresponse()
        response.read()
        conn.close()
        after = peak_rss_kib(proc.pid)
    assert response.status == 201
    assert (root / "big.bin").stat().st_size == size
    assert after - before < 32 << 10, f"peak RSS grew by {(after - before) >> 10} MiB"


@pytest.mark.parametrize("target", ["/.htaccess", "/site/.git/hooks/post-update", "/.well-known/x"])
def test_hidden_names_cannot_be_uploaded(server: Server, www: Path, target: str) -> None:
    """An upload to a dot-name is 403 and stores nothing."""
    before = sorted(www.rglob("*"))
    status, _, _ = post(server, target, b"payload")
    assert status == 403
    assert sorted(www.rglob("*")) == before


def test_deep_upload_path_is_414_without_traceback(
    server: Server, www: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 2,000-segment upload path is 414 (once a 500 with a RecursionError); nothing is made."""
    before = sorted(www.rglob("*"))
    status, _, body = post(server, "/a" * 2000 + "/f.txt", b"x")
    assert status == 414
    assert b"upload path longer than" in body
    assert sorted(www.rglob("*")) == before
    assert "RecursionError" not in caplog.text


def test_upload_depth_bound_is_exact(server: Server, www: Path) -> None:
    """``MAX_UPLOAD_DEPTH`` segments are stored (folders made level by level); one more is 414."""
    deepest = "/d" * (MAX_UPLOAD_DEPTH - 1) + "/f.txt"
    status, headers, _ = post(server, deepest, b"deep")
    assert (status, headers["Location"]) == (201, deepest)
    assert (www / deepest.lstrip("/")).read_bytes() == b"deep"
    status, _, body = post(server, "/d" + deepest, b"x")
    assert (status, b"deeper than" in body) == (414, True)


def test_long_upload_path_is_414(server: Server, www: Path) -> None:
    """An upload path over ``MAX_UPLOAD_PATH_BYTES`` bytes (each segment short enough) is 414."""
    segment = "/" + "n" * 200
    target = segment * (MAX_UPLOAD_PATH_BYTES // len(segment) + 1)
    assert len(target) > MAX_UPLOAD_PATH_BYTES
    before = sorted(www.rglob("*"))
    assert post(server, target, b"x")[0] == 414
    assert sorted(www.rglob("*")) == before


def test_failed_upload_removes_the_folders_it_created(
    server: Server, www: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload that fails after making its folders removes them; folders that existed stay."""

    def refuse(folder: str, prefix: str) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied", folder)

    (www / "kept").mkdir()
    monkeypatch.setattr("webserver.uploads.locked_temp_file", refuse)
    status, _, _ = post(server, "/kept/new1/new2/f.txt", b"x")
    assert status == 500
    assert (www / "kept").is_dir()
    assert not (www / "kept" / "new1").exists()


def test_a_255_byte_name_uploaded_twice_gets_a_shortened_number(server: Server, www: Path) -> None:
    """The second upload of a 255-byte name is stored under a numbered name cut to 255 bytes
    (once a 400: ``name-1.txt`` was too long); the first is untouched."""
    name = "n" * 251 + ".txt"
    first = post(server, "/" + name, b"one")
    second = post(server, "/" + name, b"two")
    shortened = "n" * 249 + "-1.txt"
    assert (first[0], first[1]["Location"]) == (201, "/" + name)
    assert (second[0], second[1]["Location"]) == (201, "/" + shortened)
    assert (www / name).read_bytes() == b"one"
    assert (www / shortened).read_bytes() == b"two"


def _in_progress(root: Path) -> Path:
    return root / IN_PROGRESS_FOLDER


def _start_upload(port: int, target: str, size: int) -> socket.socket:
    """A connection that has sent the head and more than the spool's memory limit of a body of
    ``size`` bytes, and then waits."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=NET_TIMEOUT)
    sock.sendall(f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
    sock.sendall(b"a" * (MEMORY_LIMIT + 1000))
    return sock


def _wait_for_file(folder: Path) -> Path:
    """The one file of ``folder``, once it is there (an upload being spooled)."""
    deadline = time.monotonic() + NET_TIMEOUT
    while True:
        found = list(folder.iterdir()) if folder.is_dir() else []
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, f"nothing appeared in {folder}"
        threading.Event().wait(0.005)


def _finish_upload(sock: socket.socket, size: int) -> int:
    sock.sendall(b"a" * (size - MEMORY_LIMIT - 1000))
    return WireReader(sock).read().status


def test_an_upload_in_progress_is_private_and_locked(server: Server, www: Path) -> None:
    """While its body arrives an upload is a 0600 file, locked, in the one 0700 in-progress
    folder of the root (once a 0644 file beside its final name); published, it is 0644."""
    size = 3 * MEMORY_LIMIT
    with _start_upload(server.listen()[1], "/sub/private.bin", size) as sock:
        partial = _wait_for_file(_in_progress(www))
        assert stat.S_IMODE(_in_progress(www).stat().st_mode) == 0o700
        assert stat.S_IMODE(partial.stat().st_mode) == 0o600
        with open(partial, "rb") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert not (www / "sub").exists()
        assert _finish_upload(sock, size) == 201
    assert stat.S_IMODE((www / "sub" / "private.bin").stat().st_mode) == 0o644
    assert (www / "sub" / "private.bin").read_bytes() == b"a" * size
    assert leftovers(www) == []


def test_a_spooled_body_is_published_by_a_link_not_a_copy(server: Server, www: Path) -> None:
    """A body too large for memory is spooled in the in-progress folder and the stored file is
    that very file (same inode): it is never copied a second time."""
    size = 5 * MEMORY_LIMIT
    with _start_upload(server.listen()[1], "/linked.bin", size) as sock:
        spooled = _wait_for_file(_in_progress(www))
        assert spooled.name.startswith(SPOOL_PREFIX)
        inode = spooled.stat().st_ino
        assert _finish_upload(sock, size) == 201
    assert (www / "linked.bin").stat().st_ino == inode
    assert (www / "linked.bin").stat().st_size == size
    assert list(_in_progress(www).iterdir()) == []


def test_the_in_progress_folder_is_never_served_listed_or_uploaded_to(
    server: Server, www: Path
) -> None:
    """The in-progress folder exists from the start but is 404, absent from the listing, and
    no upload can name it."""
    assert _in_progress(www).is_dir()
    host, port = server.listen()
    conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
    try:
        conn.request("GET", f"/{IN_PROGRESS_FOLDER}/")
        hidden = conn.getresponse()
        hidden.read()
        assert hidden.status == 404
        conn.request("GET", "/?format=json")
        listing = conn.getresponse().read().decode()
    finally:
        conn.close()
    assert IN_PROGRESS_FOLDER not in listing
    for target in (f"/{IN_PROGRESS_FOLDER}", f"/{IN_PROGRESS_FOLDER}/x.txt"):
        assert post(server, target, b"x")[0] == 400
    assert list(_in_progress(www).iterdir()) == []


def test_an_open_in_progress_folder_is_made_private_and_a_symlink_refused(
    www: Path, tmp_path: Path
) -> None:
    """An in-progress folder found readable by others is made 0700 again at start; a symlink
    in its place (to a folder outside) is never written through: 500, nothing outside."""
    _in_progress(www).mkdir(mode=0o755)
    os.chmod(_in_progress(www), 0o755)  # noqa: S103 - the state the server must repair
    with running_server(root=www, access_log=False):
        assert stat.S_IMODE(_in_progress(www).stat().st_mode) == 0o700
    _in_progress(www).rmdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _in_progress(www).symlink_to(outside)
    with running_server(root=www, access_log=False) as server:
        assert post(server, "/x.txt", b"x")[0] == 500
        assert post(server, "/big.bin", b"y" * (2 * MEMORY_LIMIT))[0] == 500
    assert list(outside.iterdir()) == []
    assert not (www / "x.txt").exists()


def test_a_killed_servers_leftovers_are_removed_at_the_next_start(tmp_path: Path) -> None:
    """A ``webserver run`` killed (SIGKILL) mid-upload leaves its partial file; the next start
    on the same root removes it, and any other temporary no process holds."""
    root = tmp_path / "root"
    root.mkdir()
    size = 4 * MEMORY_LIMIT
    with webserver_process("--port", "0", "--root", str(root), "--no-access-log") as (proc, m):
        sock = _start_upload(int(m["port"]), "/killed.bin", size)
        try:
            partial = _wait_for_file(_in_progress(root))
            proc.kill()
            proc.wait(NET_TIMEOUT)
        finally:
            sock.close()
    stale = [_in_progress(root) / (TEMP_PREFIX + "old"), _in_progress(root) / (SPOOL_PREFIX + "x")]
    for path in stale:
        path.write_bytes(b"left over")
    assert partial.exists()
    with webserver_process("--port", "0", "--root", str(root), "--no-access-log"):
        assert list(_in_progress(root).iterdir()) == []
    assert not (root / "killed.bin").exists()


def test_a_live_siblings_upload_is_kept_by_a_starting_server(tmp_path: Path) -> None:
    """A server starting on a root where another live process (a ``--workers`` sibling) is
    receiving an upload leaves that upload's locked file alone, and the upload completes."""
    root = tmp_path / "root"
    root.mkdir()
    size = 4 * MEMORY_LIMIT
    with webserver_process("--port", "0", "--root", str(root), "--no-access-log") as (_, m):
        sock = _start_upload(int(m["port"]), "/kept.bin", size)
        try:
            partial = _wait_for_file(_in_progress(root))
            with webserver_process("--port", "0", "--root", str(root), "--no-access-log"):
                assert partial.exists()
            assert _finish_upload(sock, size) == 201
        finally:
            sock.close()
    assert (root / "kept.bin").read_bytes() == b"a" * size


def put(
    server: Server, target: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return post(server, target, body, headers, method="PUT")


class TestPut:
    def test_put_creates_then_replaces_in_place(self, server: Server, www: Path) -> None:
        """PUT stores at exactly the path: 201 Created (Location, ETag) when new, 204 when it
        replaced the file; no numbered copy; the ETag is the one GET then sends."""
        status, headers, body = put(server, "/sub/doc.txt", b"first")
        assert (status, headers["Location"]) == (201, "/sub/doc.txt")
        assert body == b"stored sub/doc.txt (5 bytes)\n"
        assert headers["ETag"] == make_etag((www / "sub" / "doc.txt").stat())
        status, headers, body = put(server, "/sub/doc.txt", b"second version")
        assert (status, body) == (204, b"")
        assert (www / "sub" / "doc.txt").read_bytes() == b"second version"
        assert sorted(p.name for p in (www / "sub").iterdir()) == ["doc.txt"]
        host, port = server.listen()
        conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
        try:
            conn.request("GET", "/sub/doc.txt")
            response = conn.getresponse()
            assert response.read() == b"second version"
            assert response.getheader("ETag") == headers["ETag"]
        finally:
            conn.close()
        assert leftovers(www) == []

    def test_a_reader_sees_the_old_file_or_the_new_one_whole(
        self, server: Server, www: Path
    ) -> None:
        """PUT replaces by rename, never by rewriting the file: a reader that opened the old
        file keeps reading it whole while the path gives the new one."""
        old = b"old " * 50_000
        (www / "big.txt").write_bytes(old)
        with open(www / "big.txt", "rb") as reader:
            assert put(server, "/big.txt", b"new")[0] == 204
            assert reader.read() == old
        assert (www / "big.txt").read_bytes() == b"new"

    def test_a_large_put_is_linked_from_the_spool(self, server: Server, www: Path) -> None:
        """A body too large for memory is spooled in the in-progress folder and renamed into
        place (same inode), never copied."""
        (www / "large.bin").write_bytes(b"before")
        size = 5 * MEMORY_LIMIT
        with socket.create_connection(server.listen(), timeout=NET_TIMEOUT) as sock:
            sock.sendall(
                f"PUT /large.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
            )
            sock.sendall(b"a" * (MEMORY_LIMIT + 1000))
            inode = _wait_for_file(_in_progress(www)).stat().st_ino
            assert _finish_upload(sock, size) == 204
        assert (www / "large.bin").stat().st_ino == inode
        assert (www / "large.bin").read_bytes() == b"a" * size
        assert list(_in_progress(www).iterdir()) == []

    def test_if_none_match_star_refuses_to_replace(self, server: Server, www: Path) -> None:
        """``If-None-Match: *``: 412 when a file is there (left untouched), 201 when not."""
        status, _, _ = put(server, "/hello.txt", b"x", {"If-None-Match": "*"})
        assert status == 412
        assert (www / "hello.txt").read_bytes() == b"hello, world\n"
        assert put(server, "/fresh.txt", b"x", {"If-None-Match": "*"})[0] == 201
        assert leftovers(www) == []

    def test_if_match_replaces_only_the_version_named(self, server: Server, www: Path) -> None:
        """``If-Match`` with the current ETag replaces (204); with an old one, a weak one, or
        on a missing file, 412 and nothing changes."""
        etag = make_etag((www / "hello.txt").stat())
        assert put(server, "/hello.txt", b"v2", {"If-Match": f'"nope", {etag}'})[0] == 204
        assert put(server, "/hello.txt", b"v3", {"If-Match": etag})[0] == 412
        new_etag = make_etag((www / "hello.txt").stat())
        assert put(server, "/hello.txt", b"v3", {"If-Match": "W/" + new_etag})[0] == 412
        assert (www / "hello.txt").read_bytes() == b"v2"
        assert put(server, "/absent.txt", b"x", {"If-Match": "*"})[0] == 412
        assert put(server, "/new/absent.txt", b"x", {"If-Match": new_etag})[0] == 412
        assert not (www / "absent.txt").exists()
        assert not (www / "new").exists()  # the folder made for it is removed again
        assert put(server, "/hello.txt", b"v4", {"If-Match": "*"})[0] == 204

    @pytest.mark.parametrize(
        ("target", "status"),
        [
            ("/.htaccess", 403),
            ("/a/.git/config", 403),
            ("/a//b.txt", 400),
            ("/../escape.txt", 400),
            ("/" + TEMP_PREFIX + "x", 400),
            ("/folder/", 400),
            ("/d" * (MAX_UPLOAD_DEPTH + 1), 414),
            ("/hello.txt/child", 409),
            ("/docs", 409),
        ],
    )
    def test_put_obeys_the_upload_rules(
        self, server: Server, www: Path, target: str, status: int
    ) -> None:
        """PUT refuses what POST refuses (hidden names, bad names, depth), and a folder at the
        name is not replaced; nothing is written."""
        before = sorted(www.rglob("*"))
        assert put(server, target, b"payload")[0] == status
        assert sorted(www.rglob("*")) == before

    def test_put_over_the_limit_is_413(self, small_limit_server: Server, www: Path) -> None:
        """A PUT body over ``--max-upload`` is 413 and the file there is untouched."""
        assert put(small_limit_server, "/hello.txt", b"z" * 1001)[0] == 413
        assert (www / "hello.txt").read_bytes() == b"hello, world\n"
        assert put(small_limit_server, "/hello.txt", b"z" * 1000)[0] == 204

    def test_put_on_a_full_disk_is_507(
        self, server: Server, www: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the disk is full a PUT is 507 and the file there is untouched."""

        def temp_on_full_disk(folder: str, prefix: str) -> tuple[int, str]:
            fd, path = locked_temp_file(folder, prefix)
            os.close(fd)
            return os.open("/dev/full", os.O_WRONLY), path

        monkeypatch.setattr("webserver.uploads.locked_temp_file", temp_on_full_disk)
        assert put(server, "/hello.txt", b"x" * 1000)[0] == 507
        assert (www / "hello.txt").read_bytes() == b"hello, world\n"
        assert leftovers(www) == []

    def test_put_onto_a_symlink_is_409(self, server: Server, www: Path) -> None:
        """A symlink at the name is not replaced (nor what it points to)."""
        os.symlink(www / "hello.txt", www / "link.txt")
        assert put(server, "/link.txt", b"x")[0] == 409
        assert (www / "link.txt").is_symlink()
        assert (www / "hello.txt").read_bytes() == b"hello, world\n"


class TestPutPreconditions:
    """``put_precondition_failed``: RFC 9110 §13.2.2 order over a file's stat (or none)."""

    @pytest.fixture
    def current(self, tmp_path: Path) -> os.stat_result:
        (tmp_path / "f").write_bytes(b"x")
        os.utime(tmp_path / "f", (1_000_000, 1_000_000))
        return (tmp_path / "f").stat()

    def test_no_conditions_always_hold(self, current: os.stat_result) -> None:
        """Without conditional fields a PUT proceeds whether or not a file exists."""
        assert not put_precondition_failed(Headers(), current)
        assert not put_precondition_failed(Headers(), None)

    def test_if_match(self, current: os.stat_result) -> None:
        """If-Match holds only for a listed strong ETag of an existing file, or ``*``."""
        etag = make_etag(current)
        for value, failed in [
            (etag, False),
            (f'"a", {etag}', False),
            ("*", False),
            ('"a"', True),
            ("W/" + etag, True),
        ]:
            assert put_precondition_failed(Headers([("If-Match", value)]), current) is failed
        assert put_precondition_failed(Headers([("If-Match", "*")]), None)

    def test_if_unmodified_since(self, current: os.stat_result) -> None:
        """If-Unmodified-Since fails for a file changed after the date; it is ignored when
        If-Match is present, when no file exists, and when the date is not a date."""
        before = format_http_date(999_999)
        assert put_precondition_failed(Headers([("If-Unmodified-Since", before)]), current)
        at = format_http_date(1_000_000)
        assert not put_precondition_failed(Headers([("If-Unmodified-Since", at)]), current)
        both = Headers([("If-Match", "*"), ("If-Unmodified-Since", before)])
        assert not put_precondition_failed(both, current)
        assert not put_precondition_failed(Headers([("If-Unmodified-Since", before)]), None)
        assert not put_precondition_failed(Headers([("If-Unmodified-Since", "soon")]), current)

    def test_if_none_match(self, current: os.stat_result) -> None:
        """If-None-Match fails when the file exists and is ``*`` or listed (weak comparison)."""
        etag = make_etag(current)
        for value, failed in [("*", True), (etag, True), ("W/" + etag, True), ('"a"', False)]:
            assert put_precondition_failed(Headers([("If-None-Match", value)]), current) is failed
        assert not put_precondition_failed(Headers([("If-None-Match", "*")]), None)


class TestReadOnly:
    def test_post_and_put_are_405_with_allow(self, www: Path) -> None:
        """With ``read_only`` POST and PUT are 405 with ``Allow: GET, HEAD, OPTIONS``, nothing is
        written (not even the in-progress folder), and GET still serves."""
        with running_server(root=www, read_only=True, access_log=False) as server:
            for method in ("POST", "PUT"):
                status, headers, _ = post(server, "/new.txt", b"x", method=method)
                assert (status, headers["Allow"]) == (405, "GET, HEAD, OPTIONS")
            assert post(server, "/hello.txt", b"x", method="PUT")[0] == 405
            assert post(server, "/hello.txt", b"", method="GET")[2] == b"hello, world\n"
        assert not (www / "new.txt").exists()
        assert not _in_progress(www).exists()
        assert (www / "hello.txt").read_bytes() == b"hello, world\n"


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + NET_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        threading.Event().wait(0.01)


def _children(parent: int) -> set[int]:
    """The processes whose parent is ``parent`` (Linux /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == parent:
                found.add(int(entry))
    return found


def _holds(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
    return False


def test_workers_restarted_after_a_kill_keep_live_uploads_and_remove_dead_ones(
    tmp_path: Path,
) -> None:
    """With ``--workers 2``: a worker killed and restarted by the supervisor cleans the
    in-progress folder at its start but leaves the upload its live sibling is receiving (which
    then completes); when the worker holding an upload is killed, its replacement removes it."""
    root = tmp_path / "root"
    root.mkdir()
    size = 4 * MEMORY_LIMIT
    args = ("--port", "0", "--root", str(root), "--no-access-log", "--workers", "2")
    with webserver_process(*args) as (proc, m):
        port = int(m["port"])
        _wait_until(lambda: len(_children(proc.pid)) == 2, "two workers run")
        sock = _start_upload(port, "/live.bin", size)
        try:
            partial = _wait_for_file(_in_progress(root))
            workers = _children(proc.pid)
            holder = next(pid for pid in workers if _holds(pid, partial))
            stale = _in_progress(root) / (SPOOL_PREFIX + "stale")
            stale.write_bytes(b"left by a killed worker")
            os.kill(next(iter(workers - {holder})), signal.SIGKILL)
            _wait_until(lambda: not stale.exists(), "the restarted worker cleans up")
            assert partial.exists()
            assert _finish_upload(sock, size) == 201
        finally:
            sock.close()
        assert (root / "live.bin").read_bytes() == b"a" * size
        workers = _children(proc.pid)
        with _start_upload(port, "/dead.bin", size):
            partial = _wait_for_file(_in_progress(root))
            holder = next(pid for pid in workers if _holds(pid, partial))
            os.kill(holder, signal.SIGKILL)
            _wait_until(lambda: not partial.exists(), "the replacement removes the dead upload")
    assert not (root / "dead.bin").exists()
