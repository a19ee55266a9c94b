"""Form uploads (multipart/form-data POST): each file part stored byte-exact under a safe name,
never overwriting, all or nothing, with bounded memory."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from webserver import Server
from webserver._forms import FALLBACK_NAME, safe_filename
from webserver._spool import MEMORY_LIMIT
from webserver._spool import TEMP_PREFIX as SPOOL_PREFIX
from webserver.multipart import MAX_PARTS
from webserver.paths import TEMP_PREFIX, upload_segments
from webserver.testing import running_server
from webserver.uploads import IN_PROGRESS_FOLDER, Uploads

from .conftest import NET_TIMEOUT, connect, peak_rss_kib, webserver_process
from .test_multipart import Part, encode
from .test_uploads import _wait_for_file, leftovers
from .wire import WireReader

BOUNDARY = b"----formboundaryXyZ"
FORM_TYPE = "multipart/form-data; boundary=" + BOUNDARY.decode()


def post_form(
    server: Server,
    target: str,
    parts: list[Part] | bytes,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    body = parts if isinstance(parts, bytes) else encode(BOUNDARY, parts)
    host, port = server.listen()
    conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
    try:
        conn.request(
            "POST", target, body=body, headers={"Content-Type": FORM_TYPE, **(headers or {})}
        )
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def file_part(filename: str, content: bytes, name: str = "file") -> Part:
    return Part(name, filename, "application/octet-stream", content)


def tree(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def form_head(target: str, length: int) -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM_TYPE}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _locked(path: Path) -> bool:
    """Whether a process holds ``path`` locked (as the clean-up at start would find it)."""
    with open(path, "rb") as other:
        try:
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def wait_until_empty(folder: Path) -> None:
    """Return once ``folder`` holds nothing (a failed request's clean-up runs on its worker)."""
    deadline = time.monotonic() + NET_TIMEOUT
    while list(folder.iterdir()):
        assert time.monotonic() < deadline, list(folder.iterdir())
        threading.Event().wait(0.005)


class TestSafeFilename:
    @pytest.mark.parametrize(
        ("raw", "safe"),
        [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("..\\..\\boot.ini", "boot.ini"),
            ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
            ("C:photo.jpg", "photo.jpg"),
            (".htaccess", "htaccess"),
            ("...", FALLBACK_NAME),
            ("..", FALLBACK_NAME),
            ("a/", FALLBACK_NAME),
            ("", FALLBACK_NAME),
            ("a\x00b\x1fc\x7f.txt", "abc.txt"),
            ("  spaced  .txt ", "spaced  .txt"),
            (".webserver-upload-x", "webserver-upload-x"),
            ("résumé.txt", "résumé.txt"),
        ],
    )
    def test_made_safe(self, raw: str, safe: str) -> None:
        """Path separators, drive letters, control characters and leading dots are dropped."""
        assert safe_filename(raw) == safe

    def test_long_name_keeps_its_suffix(self) -> None:
        """A name over 255 bytes of UTF-8 is cut from its stem, whole characters, keeping the
        suffix."""
        name = safe_filename("é" * 200 + ".tar.gz")
        assert name.endswith(".tar.gz") and len(name.encode()) <= 255
        assert name == "é" * 124 + ".tar.gz"

    @given(
        st.text(
            alphabet=st.sampled_from("./\\:C a\x00\x1f\x7fé日-")
            | st.characters(exclude_categories=["Cs"]),  # decoded UTF-8 holds no surrogate
            max_size=400,
        )
    )
    @example(" A:")  # a drive letter once stripped
    @example(". .x")  # hidden once its first dot goes
    @example("\x00.C:a")  # a drive once the control character and the dot go
    def test_property_always_a_valid_upload_name(self, raw: str) -> None:
        """Whatever a part calls its file, the safe name is one plain POST would accept as a
        single segment: not hidden, no separator, no control character, at most 255 bytes."""
        name = safe_filename(raw)
        assert upload_segments("/" + name) == [name]
        assert not name.startswith(".") and len(name.encode()) <= 255


class TestStoring:
    def test_files_stored_byte_exact_fields_listed(self, server: Server, www: Path) -> None:
        """Each file part is stored byte-exact in the folder; 201, Location of the first, and
        a text body naming what was stored and the fields that were not."""
        one, two = os.urandom(200_000), b"second\r\n--" + BOUNDARY[:-1]
        parts = [
            file_part("one.bin", one),
            Part("comment", None, "text/plain", b"not stored"),
            file_part("two.txt", two, name="other"),
        ]
        status, headers, body = post_form(server, "/docs/", parts)
        assert (status, headers["Location"]) == (201, "/docs/one.bin")
        assert (www / "docs" / "one.bin").read_bytes() == one
        assert (www / "docs" / "two.txt").read_bytes() == two
        assert (www / "docs" / "one.bin").stat().st_mode & 0o777 == 0o644
        assert body.decode().splitlines() == [
            "stored /docs/one.bin (200000 bytes)",
            f"stored /docs/two.txt ({len(two)} bytes)",
            "ignored field 'comment'",
        ]
        assert not (www / "docs" / "comment").exists()
        assert leftovers(www) == []

    def test_a_form_in_progress_stays_in_the_in_progress_folder(
        self, server: Server, www: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While its body arrives a form is spooled in the in-progress folder and nothing else
        of the root changes; its files then wait there, locked, until each is published under
        its name -- never as a temporary in the target folder -- and none is left after."""
        one = os.urandom(3 * MEMORY_LIMIT)
        body = encode(BOUNDARY, [file_part("one.bin", one), file_part("two.txt", b"2")])
        in_progress = www / IN_PROGRESS_FOLDER
        at_publishing: list[tuple[list[str], list[str], list[bool]]] = []
        real_link = Uploads._link

        def link(handler: Uploads, temp: str, folder: Path, name: str) -> Path:
            if not at_publishing:
                waiting = sorted(p.name for p in in_progress.iterdir())
                locked = [_locked(in_progress / name) for name in waiting]
                at_publishing.append((waiting, sorted(os.listdir(folder)), locked))
            return real_link(handler, temp, folder, name)

        monkeypatch.setattr(Uploads, "_link", link)
        before = tree(www)
        with connect(server) as sock:
            sock.sendall(form_head("/new/", len(body)) + body[: 2 * MEMORY_LIMIT])
            spooled = _wait_for_file(in_progress)
            assert spooled.name.startswith(SPOOL_PREFIX)
            assert tree(www) == sorted([*before, spooled.relative_to(www)])
            sock.sendall(body[2 * MEMORY_LIMIT :])
            assert WireReader(sock).read().status == 201
        [(waiting, in_folder, locked)] = at_publishing
        temporaries = [name for name in waiting if name.startswith(TEMP_PREFIX)]
        assert (len(temporaries), in_folder, locked) == (2, [], [True] * len(waiting))
        assert (www / "new" / "one.bin").read_bytes() == one
        wait_until_empty(in_progress)
        assert leftovers(www) == []

    def test_json_answer(self, server: Server, www: Path) -> None:
        """With Accept: application/json the answer lists stored files and ignored fields."""
        parts = [file_part("a b.txt", b"x"), Part("note", None, "text/plain", b"n")]
        status, headers, body = post_form(server, "/", parts, {"Accept": "application/json"})
        assert (status, headers["Content-Type"]) == (201, "application/json")
        assert json.loads(body) == {
            "stored": [{"name": "a b.txt", "location": "/a%20b.txt", "size": 1}],
            "ignored_fields": ["note"],
        }
        assert headers["Location"] == "/a%20b.txt"

    @pytest.mark.parametrize(
        ("target", "folder"),
        [
            ("/docs/", "docs"),
            ("/docs", "docs"),  # an existing folder without its slash
            ("/docs/anything.txt", "docs"),  # a file URL: its folder
            ("/new/deeper/", "new/deeper"),  # missing folders are created
            ("/", ""),
            ("/whatever", ""),
        ],
    )
    def test_target_folder(self, server: Server, www: Path, target: str, folder: str) -> None:
        """A folder URL, a folder without its slash, or a file URL's folder receives the files
        under their own names."""
        status, headers, _ = post_form(server, target, [file_part("f.txt", b"data")])
        assert status == 201
        assert (www / folder / "f.txt").read_bytes() == b"data"
        assert headers["Location"] == "/" + (folder + "/" if folder else "") + "f.txt"

    def test_never_overwrites(self, server: Server, www: Path) -> None:
        """A taken name, or the same name twice in one form, gets a numbered sibling."""
        status, _, body = post_form(
            server, "/", [file_part("hello.txt", b"1"), file_part("hello.txt", b"2")]
        )
        assert status == 201
        assert (www / "hello.txt").read_bytes() == b"hello, world\n"
        assert (www / "hello-1.txt").read_bytes() == b"1"
        assert (www / "hello-2.txt").read_bytes() == b"2"
        assert b"/hello-1.txt" in body and b"/hello-2.txt" in body

    @pytest.mark.parametrize(
        ("filename", "stored"),
        [
            ("../../escape.txt", "escape.txt"),
            ("..\\..\\escape.txt", "escape.txt"),
            ("/etc/passwd", "passwd"),
            (".htaccess", "htaccess"),
            ("..", FALLBACK_NAME),
            (".webserver-upload-abc", "webserver-upload-abc"),
        ],
    )
    def test_part_name_traversal_is_made_safe(
        self, server: Server, www: Path, filename: str, stored: str
    ) -> None:
        """A part's file name never leads out of the folder, nor to a hidden or reserved name:
        it is stored by its last segment, without leading dots."""
        outside = tree(www.parent)
        status, headers, _ = post_form(server, "/docs/", [file_part(filename, b"payload")])
        assert status == 201
        assert headers["Location"] == "/docs/" + stored
        assert (www / "docs" / stored).read_bytes() == b"payload"
        assert [p for p in tree(www.parent) if p not in outside] == [Path("www/docs") / stored]

    def test_utf8_filename_star(self, server: Server, www: Path) -> None:
        """A filename*= (RFC 8187) name is used as given."""
        body = (
            b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=f;"
            b" filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt\r\n\r\nja\r\n--" + BOUNDARY + b"--\r\n"
        )
        status, headers, _ = post_form(server, "/", body)
        assert (status, headers["Location"]) == (201, "/%E6%97%A5%E6%9C%AC.txt")
        assert (www / "日本.txt").read_bytes() == b"ja"


class TestRefused:
    @pytest.mark.parametrize(
        ("body", "detail"),
        [
            (encode(BOUNDARY, [file_part("a.txt", b"a")])[:-4], b"without its final boundary"),
            (encode(BOUNDARY, [file_part("a.txt", b"a")] * 3), None),
            (
                encode(BOUNDARY, [file_part("a.txt", b"a"), file_part("b.txt", b"b")]).replace(
                    b"\r\nContent-Type", b"\r\nX-Pad: " + b"p" * 9000 + b"\r\nContent-Type", 1
                ),
                b"header block is over",
            ),
            (
                encode(BOUNDARY, [file_part(f"f{i}", b"") for i in range(MAX_PARTS + 1)]),
                b"more than 1000 parts",
            ),
            (
                encode(BOUNDARY, [file_part("a.txt", b"a")]).replace(
                    b"--" + BOUNDARY + b"\r\n", b"--" + BOUNDARY + b"junk\r\n", 1
                ),
                b"a boundary followed by other",
            ),
        ],
        ids=["no-final-boundary", "ok", "header-block-too-large", "too-many-parts", "junk"],
    )
    def test_malformed_body_stores_nothing(
        self, server: Server, www: Path, body: bytes, detail: bytes | None
    ) -> None:
        """A malformed form is 400 with the reason, and none of its files is stored, even
        those that arrived whole before the fault; no temporary is left."""
        before = tree(www)
        status, _, answer = post_form(server, "/docs/", body)
        if detail is None:  # the control case: the same body well-formed is stored
            assert status == 201
            return
        assert status == 400, answer
        assert detail in answer
        assert tree(www) == before
        assert leftovers(www) == []

    @pytest.mark.parametrize(
        "content_type",
        [
            "multipart/form-data",
            "multipart/form-data; boundary=" + "b" * 71,
            'multipart/form-data; boundary="a"; boundary="b"',
        ],
    )
    def test_bad_boundary_is_400(self, server: Server, www: Path, content_type: str) -> None:
        """A form without a usable boundary is 400 and nothing is stored."""
        before = tree(www)
        body = encode(BOUNDARY, [file_part("a.txt", b"a")])
        status, _, _ = post_form(server, "/", body, {"Content-Type": content_type})
        assert status == 400
        assert tree(www) == before

    def test_form_without_a_file_is_400(self, server: Server, www: Path) -> None:
        """Only fields, or a file input left empty (filename=""), store nothing: 400."""
        before = tree(www)
        parts = [Part("a", None, "text/plain", b"x"), file_part("", b"")]
        status, _, body = post_form(server, "/docs/", parts)
        assert (status, b"no file" in body) == (400, True)
        assert tree(www) == before

    @pytest.mark.parametrize(
        ("target", "status"),
        [("/.git/", 403), ("/docs/.hidden/x", 403), ("/a//b/", 400), ("/hello.txt/", 409)],
    )
    def test_folder_rules_of_plain_posts(
        self, server: Server, www: Path, target: str, status: int
    ) -> None:
        """The folder path obeys the plain POST's rules: dot-names 403, empty segments 400,
        a file in the way 409; nothing is made."""
        before = tree(www)
        assert post_form(server, target, [file_part("f.txt", b"x")])[0] == status
        assert tree(www) == before

    def test_failure_while_publishing_removes_published_files(
        self, server: Server, www: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the second file cannot be published, the first is removed again: a form is
        stored whole or not at all."""
        from webserver.uploads import _publish as real

        calls = []

        def publish_once(temp: str, folder: Path, name: str, start: int) -> tuple[Path, int]:
            calls.append(name)
            if len(calls) == 2:
                raise OSError(5, "Input/output error")
            return real(temp, folder, name, start)

        monkeypatch.setattr("webserver.uploads._publish", publish_once)
        before = tree(www)
        status, _, _ = post_form(
            server, "/new/", [file_part("one.txt", b"1"), file_part("two.txt", b"2")]
        )
        assert (status, calls) == (500, ["one.txt", "two.txt"])
        assert tree(www) == before

    @pytest.mark.parametrize("fault", ["malformed", "publishing", "disconnect"])
    def test_a_failed_form_leaves_nothing_anywhere(
        self, server: Server, www: Path, monkeypatch: pytest.MonkeyPatch, fault: str
    ) -> None:
        """A form that fails -- a malformed body, a file that cannot be published, a client gone
        mid-body -- leaves no file, no folder it made and no temporary, in the in-progress folder
        or elsewhere."""

        def refuse(temp: str, folder: Path, name: str, start: int) -> tuple[Path, int]:
            raise OSError(5, "Input/output error")

        if fault == "publishing":
            monkeypatch.setattr("webserver.uploads._publish", refuse)
        big = file_part("big.bin", os.urandom(3 * MEMORY_LIMIT))
        body = encode(BOUNDARY, [big, file_part("small.txt", b"s")])
        if fault == "malformed":
            body = body[:-4]
        before = tree(www)
        with connect(server) as sock:
            sock.sendall(form_head("/new/", len(body)))
            if fault == "disconnect":
                sock.sendall(body[: 2 * MEMORY_LIMIT])
                _wait_for_file(www / IN_PROGRESS_FOLDER)
                sock.shutdown(socket.SHUT_RDWR)
            else:
                sock.sendall(body)
                status = WireReader(sock).read().status
                assert status == (400 if fault == "malformed" else 500)
        wait_until_empty(www / IN_PROGRESS_FOLDER)
        assert tree(www) == before
        assert leftovers(www) == []

    def test_connection_kept_after_a_malformed_form(self, server: Server) -> None:
        """A 400 for a malformed form keeps the connection: the body was read whole."""
        body = encode(BOUNDARY, [file_part("a.txt", b"a")])[:-4]
        with connect(server) as sock:
            sock.sendall(
                b"POST /docs/ HTTP/1.1\r\nHost: x\r\nContent-Type: "
                + FORM_TYPE.encode()
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
                + b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            reader = WireReader(sock)
            assert [reader.read().status, reader.read().status] == [400, 200]


@pytest.fixture
def limited(www: Path) -> Iterator[Server]:
    with running_server(root=www, max_upload=1000, access_log=False) as srv:
        yield srv


def test_form_over_max_upload_is_413(limited: Server, www: Path) -> None:
    """A form whose body is over --max-upload is 413 and stores nothing."""
    before = tree(www)
    status, _, _ = post_form(limited, "/", [file_part("big.bin", b"x" * 2000)])
    assert status == 413
    assert tree(www) == before


def _multipart_rss(tmp_path: Path, size: int) -> tuple[int, int, float]:
    """POST a form with one ``size``-byte file to a ``webserver run`` process; the growth of
    its peak RSS in KiB, the stored size and the seconds taken."""
    root = tmp_path / "root"
    root.mkdir()
    head = encode(BOUNDARY, [file_part("big.bin", b"")])
    opening, closing = head.split(b"\r\n\r\n\r\n--")
    opening += b"\r\n\r\n"
    closing = b"\r\n--" + closing
    block = os.urandom(1 << 20)
    with webserver_process("--port", "0", "--root", str(root), "--no-access-log") as (proc, m):
        conn = http.client.HTTPConnection("127.0.0.1", int(m["port"]), timeout=NET_TIMEOUT * 6)
        conn.request("GET", "/warm-up")  # loads what a request needs before the baseline
        conn.getresponse().read()
        before = peak_rss_kib(proc.pid)
        started = time.monotonic()
        conn.putrequest("POST", "/")
        conn.putheader("Content-Type", FORM_TYPE)
        conn.putheader("Content-Length", str(len(opening) + size + len(closing)))
        conn.endheaders()
        conn.send(opening)
        for _ in range(size // len(block)):
            conn.send(block)
        conn.send(closing)
        response = conn.getresponse()
        response.read()
        took = time.monotonic() - started
        conn.close()
        after = peak_rss_kib(proc.pid)
    assert response.status == 201
    return after - before, (root / "big.bin").stat().st_size, took


def test_a_256_mib_form_does_not_grow_memory_by_its_size(tmp_path: Path) -> None:
    """A 256 MiB file in a form streams through the parser: the server's peak RSS grows by
    far less than its size (the limit here is 32 MiB)."""
    grew, stored, _ = _multipart_rss(tmp_path, 256 << 20)
    assert stored == 256 << 20
    assert grew < 32 << 10, f"peak RSS grew by {grew >> 10} MiB"


@pytest.mark.slow
def test_a_1_gib_form_stays_flat_in_memory(tmp_path: Path) -> None:
    """A 1 GiB file in a form (the default --max-upload less the envelope) keeps the server's
    peak RSS growth under 32 MiB."""
    grew, stored, _ = _multipart_rss(tmp_path, (1 << 30) - (1 << 20))
    assert stored == (1 << 30) - (1 << 20)
    assert grew < 32 << 10, f"peak RSS grew by {grew >> 10} MiB"
