"""Tests of webclient/_redirects.py and the rounds that follow redirects (webclient/_rounds.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from webclient import (
    CacheStatus,
    Client,
    ClientConfig,
    ClientRequest,
    ClientResponse,
    RedirectError,
)
from webclient._redirects import check_chain, next_hop
from webclient.cli import main
from webserver import Request, Response, Server

from .conftest import CLIENT_TIMEOUT, BadServer, FakeClock, Origin

pytestmark = pytest.mark.timeout(30)

Where = tuple[Server, Origin]


def _client(tmp_path: Path, clock: FakeClock | None = None, **settings: object) -> Client:
    config = ClientConfig(cache_dir=tmp_path / "cache", timeout=CLIENT_TIMEOUT, **settings)  # type: ignore[arg-type]
    return Client(config, clock=clock or FakeClock())


# -- where the next request goes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "method", "expected", "keeps_body"),
    [
        (301, "POST", "GET", False),
        (302, "POST", "GET", False),
        (303, "POST", "GET", False),
        (303, "HEAD", "HEAD", True),
        (301, "GET", "GET", True),
        (307, "POST", "POST", True),
        (308, "POST", "POST", True),
        (308, "HEAD", "HEAD", True),
    ],
)
def test_the_method_after_each_status(
    status: int, method: str, expected: str, keeps_body: bool
) -> None:
    """301/302/303 turn into GET without body (HEAD stays HEAD); 307/308 keep method and body."""
    headers = [("Content-Type", "text/plain"), ("X-Token", "t")]
    hop = next_hop(method, "http://h/a", headers, status, [("location", "/b")])
    assert hop is not None
    assert (hop.method, hop.keeps_body) == (expected, keeps_body)
    names = {n for n, _ in hop.headers}
    assert ("Content-Type" in names) is keeps_body and "X-Token" in names


def test_relative_locations_are_resolved() -> None:
    """A relative Location is resolved against the URL that answered; a fragment is dropped."""
    for location, target in [
        ("b", "http://h/dir/b"),
        ("../up?q=1", "http://h/up?q=1"),
        ("//other:81/x#frag", "http://other:81/x"),
        ("https://h/s", "https://h/s"),
    ]:
        hop = next_hop("GET", "http://h/dir/a", [], 302, [("location", location)])
        assert hop is not None and hop.url == target


def test_raw_bytes_in_a_location_are_percent_encoded_as_sent() -> None:
    """A Location with raw UTF-8 bytes (read as latin-1 text) is sent as those bytes escaped,
    as curl does: /caf\\xc3\\xa9 becomes /caf%C3%A9, not the double-encoded %C3%83%C2%A9."""
    location = b"/caf\xc3\xa9?q=\xc3\xa9".decode("latin-1")
    hop = next_hop("GET", "http://h/a", [], 302, [("location", location)])
    assert hop is not None and hop.url == "http://h/caf%C3%A9?q=%C3%A9"
    hop = next_hop("GET", "http://h/a", [], 302, [("location", "/x\x1b[2J y\x7f")])
    assert hop is not None and hop.url == "http://h/x%1B[2J%20y%7F"


def test_a_location_with_raw_bytes_is_followed(
    bad_server: Callable[..., BadServer], tmp_path: Path
) -> None:
    """A 302 whose Location has raw non-ASCII bytes in its path and query is followed (it was a
    UnicodeEncodeError out of the run)."""
    server = bad_server(
        b"HTTP/1.1 302 Found\r\nLocation: /caf\xc3\xa9?q=\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    with _client(tmp_path, use_cache=False) as client:
        assert client.get(server.url + "start").body == b"ok"
    assert server.requests[-1].startswith(b"GET /caf%C3%A9?q=%C3%A9 HTTP/1.1\r\n")


def test_credentials_stay_with_their_origin() -> None:
    """Authorization, Cookie and Host are dropped on a hop to another scheme, host or port."""
    headers = [("Authorization", "Bearer x"), ("Cookie", "s=1"), ("Host", "h"), ("Accept", "*/*")]
    for target in ("https://h/b", "http://other/b", "http://h:8080/b"):
        hop = next_hop("GET", "http://h/a", headers, 302, [("location", target)])
        assert hop is not None and [n for n, _ in hop.headers] == ["Accept"]
    same = next_hop("GET", "http://h/a", headers, 302, [("location", "http://H:80/b")])
    assert same is not None and same.headers == tuple(headers)


def test_not_a_redirect() -> None:
    """A 3xx without Location, a 300 or a 304 is an answer, not a redirect."""
    assert next_hop("GET", "http://h/", [], 302, []) is None
    assert next_hop("GET", "http://h/", [], 300, [("location", "/x")]) is None
    assert next_hop("GET", "http://h/", [], 304, [("location", "/x")]) is None


def test_loops_and_long_chains_are_refused() -> None:
    """A URL seen again is a loop; more hops than allowed is an error; both one sentence."""
    with pytest.raises(
        RedirectError, match="redirect loop: http://h/a -> http://h/b -> http://h/a"
    ):
        check_chain(["http://h/a", "http://h/b"], "http://h/a", 5)
    with pytest.raises(RedirectError, match="more than 1 redirects from http://h/a"):
        check_chain(["http://h/a", "http://h/b"], "http://h/c", 1)
    check_chain(["http://h/a"], "http://h/b", 1)


def test_post_redirect_get_to_the_same_url_is_no_loop() -> None:
    """POST /form answered 303 to /form is the Post/Redirect/Get pattern, not a loop: a loop
    is the same method and URL seen again."""
    check_chain(["http://h/form"], "http://h/form", 5, methods=["POST"], method="GET")
    with pytest.raises(RedirectError, match="redirect loop: http://h/form -> http://h/form"):
        check_chain(["http://h/form"], "http://h/form", 5, methods=["POST"], method="POST")
    with pytest.raises(RedirectError, match="redirect loop: http://h/form -> http://h/x ->"):
        check_chain(
            ["http://h/form", "http://h/form", "http://h/x"],
            "http://h/form",
            5,
            methods=["POST", "GET", "GET"],
            method="GET",
        )


def test_a_post_redirected_to_its_own_url_gets_the_page(origin: Where, tmp_path: Path) -> None:
    """POST /form, 303 to /form: the GET of /form is the answer (it was 'redirect loop')."""
    server, handler = origin

    def answer(request: Request) -> Response:
        if request.method == "POST":
            return Response(303, [("Location", "/form")], b"")
        return Response(200, [], b"thanks")

    handler.script("/form", answer)
    with _client(tmp_path) as client:
        response = client.post(server.url + "form", b"name=x")
    assert (response.status, response.body) == (200, b"thanks")
    assert [s.method for s in handler.requests_to("/form")] == ["POST", "GET"]


@pytest.mark.parametrize(
    "location",
    [
        "http://[::1/x",
        "http://h:99999/x",
        "http://h:abc/",
        "http:///x",
        "http://h:0/x",
        "ftp://h/x",
    ],
)
def test_an_invalid_location_is_one_redirect_error(location: str) -> None:
    """A Location that is no fetchable URL (broken brackets, bad or zero port, no host, another
    scheme) is a RedirectError naming it, never a ValueError or a request to another place."""
    with pytest.raises(RedirectError, match="invalid Location"):
        next_hop("GET", "http://h/a", [], 302, [("location", location)])


def test_several_different_locations_are_refused() -> None:
    """Two different Location fields leave the client no single target: a RedirectError."""
    with pytest.raises(RedirectError, match="several Location"):
        next_hop("GET", "http://h/a", [], 302, [("location", "/b"), ("location", "/c")])
    hop = next_hop("GET", "http://h/a", [], 302, [("location", "/b"), ("location", "/b")])
    assert hop is not None and hop.url == "http://h/b"


# -- following them ------------------------------------------------------------------------------


def test_a_redirect_is_followed(origin: Where, tmp_path: Path) -> None:
    """GET /a answered 302 to /b gives /b's response, with /b's URL."""
    server, handler = origin
    handler.script("/a", (302, [("Location", "/b")], b"moved"))
    handler.script("/b", (200, [], b"here"))
    with _client(tmp_path) as client:
        response = client.get(server.url + "a")
    assert (response.status, response.body, response.url) == (200, b"here", server.url + "b")


def test_post_307_keeps_the_body_and_303_becomes_get(origin: Where, tmp_path: Path) -> None:
    """A POST redirected by 307 is sent again with its body; by 303, the next request is a GET."""
    server, handler = origin
    handler.script("/up", (307, [("Location", "/up2")], b""))
    handler.script("/up2", (303, [("Location", "/done")], b""))
    handler.script("/done", (200, [], b"ok"))
    with _client(tmp_path) as client:
        response = client.post(server.url + "up", b"payload")
    assert response.body == b"ok"
    assert response.bytes_sent == 2 * len(b"payload")  # the uploads of the redirected POSTs
    assert [(s.method, s.body) for s in handler.seen] == [
        ("POST", b"payload"),
        ("POST", b"payload"),
        ("GET", b""),
    ]


def test_a_cross_origin_redirect_drops_credentials(origin: Where, tmp_path: Path) -> None:
    """A redirect to another host (localhost instead of 127.0.0.1) does not carry
    Authorization or Cookie; a same-origin one does."""
    server, handler = origin
    port = server.listen()[1]
    handler.script("/a", (302, [("Location", "/b")], b""))
    handler.script("/b", (302, [("Location", f"http://localhost:{port}/c")], b""))
    handler.script("/c", (200, [], b"c"))
    secret = [("Authorization", "Bearer secret"), ("Cookie", "session=1")]
    with _client(tmp_path) as client:
        assert client.get(server.url + "a", headers=secret).body == b"c"
    by_path = {s.path: s.headers for s in handler.seen}
    assert by_path["/b"].get("authorization") == "Bearer secret"
    assert "authorization" not in by_path["/c"] and "cookie" not in by_path["/c"]


def test_a_redirect_loop_is_one_error(origin: Where, tmp_path: Path) -> None:
    """/a -> /b -> /a fails with a RedirectError naming the loop."""
    server, handler = origin
    handler.script("/a", (302, [("Location", "/b")], b""))
    handler.script("/b", (302, [("Location", "/a")], b""))
    with _client(tmp_path) as client, pytest.raises(RedirectError, match="redirect loop"):
        client.get(server.url + "a")


def test_too_many_redirects_and_none_followed(origin: Where, tmp_path: Path) -> None:
    """A chain longer than max_redirects fails; with max_redirects=0 the 3xx is the answer."""
    server, handler = origin
    for n in range(4):
        handler.script(f"/r{n}", (302, [("Location", f"/r{n + 1}")], b""))
    handler.script("/r4", (200, [], b"end"))
    with (
        _client(tmp_path, max_redirects=3) as client,
        pytest.raises(RedirectError, match="more than 3 redirects"),
    ):
        client.get(server.url + "r0")
    with _client(tmp_path, max_redirects=4) as client:
        assert client.get(server.url + "r0").body == b"end"
    with _client(tmp_path, max_redirects=0) as client:
        response = client.get(server.url + "r0")
    assert (response.status, response.header("location")) == (302, "/r1")


def test_a_cached_permanent_redirect_is_followed_without_asking(
    origin: Where, tmp_path: Path
) -> None:
    """A 301 with max-age is stored: the next GET follows it from the cache."""
    server, handler = origin
    handler.script("/old", (301, [("Location", "/new"), ("Cache-Control", "max-age=600")], b""))
    handler.script("/new", (200, [("Cache-Control", "max-age=600")], b"new"))
    clock = FakeClock()
    with _client(tmp_path, clock) as client:
        assert client.get(server.url + "old").body == b"new"
        again = client.get(server.url + "old")
    assert again.body == b"new" and again.cache_status is CacheStatus.HIT
    assert len(handler.requests_to("/old")) == 1


def test_redirect_bodies_do_not_reach_the_sink(origin: Where, tmp_path: Path) -> None:
    """Only the final response's body is written to the request's sink."""
    server, handler = origin
    handler.script("/a", (302, [("Location", "/b")], b"redirect page"))
    handler.script("/b", (200, [], b"final"))
    written: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> None:
            written.append(data)

        def close(self) -> None:
            pass

        def abort(self) -> None:
            pass

    with _client(tmp_path) as client:
        [result] = client.request_all(
            [ClientRequest("GET", server.url + "a", sink=lambda r: Sink())]
        )
    assert isinstance(result, ClientResponse) and result.status == 200
    assert b"".join(written) == b"final"


def test_batch_saves_a_redirected_file_under_the_commands_name(
    origin: Where, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """webclient batch: GET a.txt redirected to b.txt saves b.txt's body as a.txt."""
    server, handler = origin
    port = server.listen()[1]
    handler.script("/a.txt", (302, [("Location", "/b.txt")], b""))
    handler.script("/b.txt", (200, [], b"bee\n"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cmds.txt").write_text(f"GET a.txt 127.0.0.1 {port}\n")
    args = ["batch", "cmds.txt", "--no-cache", "--no-print", "--out", "out"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"bee\n"
    assert not (tmp_path / "out" / "b.txt").exists()


def test_batch_reports_a_redirect_loop_in_one_line(
    origin: Where, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """webclient batch: a loop fails its command with one error line, status 1, no file."""
    server, handler = origin
    port = server.listen()[1]
    handler.script("/a.txt", (302, [("Location", "/a.txt?again")], b""))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cmds.txt").write_text(f"GET a.txt 127.0.0.1 {port}\n")
    args = ["batch", "cmds.txt", "--no-cache", "--no-print", "--max-redirects", "3", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert "redirect loop: " in line, line
    assert not (tmp_path / "a.txt").exists()


def test_batch_with_max_redirects_0_reports_the_redirect(
    origin: Where, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """webclient batch --max-redirects 0: the 302 is the answer, a failed command (status 1)."""
    server, handler = origin
    port = server.listen()[1]
    handler.script("/a.txt", (302, [("Location", "/b.txt")], b""))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cmds.txt").write_text(f"GET a.txt 127.0.0.1 {port}\n")
    args = ["batch", "cmds.txt", "--no-cache", "--no-print", "-q", "--max-redirects", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.stderr == f"error: GET /a.txt 127.0.0.1:{port}: 302 Found\n"
    assert handler.requests_to("/b.txt") == []


def test_batch_reports_an_invalid_location_in_one_line(
    origin: Where, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """webclient get: a redirect to an unparsable Location is one error line, status 1."""
    server, handler = origin
    handler.script("/a.txt", (302, [("Location", "http://[::1/x")], b""))
    monkeypatch.chdir(tmp_path)
    args = ["get", server.url + "a.txt", "--no-cache", "-q", "-o", "a.txt"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "invalid Location 'http://[::1/x'" in line, line
    assert not (tmp_path / "a.txt").exists()


def test_a_redirect_to_an_unencodable_host_is_one_line(
    origin: Where, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """webclient get: a Location whose host IDNA cannot encode (http://a..b/) is one error
    line and status 1, never a UnicodeError traceback."""
    server, handler = origin
    handler.script("/a.txt", (302, [("Location", "http://a..b/x")], b""))
    monkeypatch.chdir(tmp_path)
    args = ["get", server.url + "a.txt", "--no-cache", "-q", "--retries", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "cannot resolve host 'a..b'" in line, line
