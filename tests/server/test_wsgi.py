"""WSGIHandler: PEP 3333 as the stdlib validator checks it, and a real Flask application."""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.validate import validator

import pytest

from webserver import Headers, PayloadTooLarge, Request, RequestBody, Server, WSGIHandler
from webserver.testing import running_server
from webserver.wsgi import FileWrapper

from .conftest import NET_TIMEOUT

Reply = tuple[int, dict[str, str], bytes]


def request(
    server: Server,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    host, port = server.listen()
    conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
    try:
        chunked = body is not None and not isinstance(body, bytes)
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def mounted(app: WSGIApplication, prefix: str = "/app", **settings: Any) -> Any:
    """A running server (no built-in routes) with ``app`` mounted at ``prefix``."""
    settings.setdefault("access_log", False)
    server = Server(port=0, default_routes=False, **settings)
    handler = WSGIHandler(app, prefix=prefix, max_upload=server.config.max_upload)
    server.route(prefix, handler, prefix=True)
    return running_server(server=server)


def environ_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Answers with the CGI keys of its environ as JSON, after reading the whole body."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    shown = {k: v for k, v in environ.items() if isinstance(v, str) and k.isupper()}
    shown["body"] = body.decode("latin-1")
    data = json.dumps(shown).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


def test_environ_splits_script_name_and_path_info_at_the_prefix() -> None:
    """SCRIPT_NAME is the prefix, PATH_INFO the decoded rest (as ISO-8859-1), the query raw."""
    with mounted(validator(environ_app)) as server:
        status, _, body = request(server, "GET", "/app/a%20b/%C3%A9?x=1&y=%20")
    environ = json.loads(body)
    assert status == 200
    assert environ["SCRIPT_NAME"] == "/app"
    assert environ["PATH_INFO"] == "/a b/\xc3\xa9"
    assert environ["QUERY_STRING"] == "x=1&y=%20"
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"


def test_prefix_itself_has_empty_path_info() -> None:
    """The prefix without a trailing slash is PATH_INFO '' (PEP 3333), not a 404."""
    with mounted(validator(environ_app)) as server:
        status, _, body = request(server, "GET", "/app")
    assert status == 200
    assert json.loads(body)["PATH_INFO"] == ""


def test_root_mount_has_empty_script_name() -> None:
    """Mounted at /, SCRIPT_NAME is empty and PATH_INFO the whole path."""
    with mounted(validator(environ_app), prefix="/") as server:
        _, _, body = request(server, "GET", "/x/y")
    environ = json.loads(body)
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("", "/x/y")


def test_headers_become_http_keys_and_underscored_names_are_dropped() -> None:
    """Fields become HTTP_* keys, repeats joined; a name with '_' cannot pose as one with '-'."""
    with mounted(validator(environ_app)) as server:
        host, port = server.listen()
        conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
        try:
            conn.putrequest("GET", "/app/", skip_host=True)
            for name, value in [
                ("Host", "example.org:8443"),
                ("X-Thing", "a"),
                ("X-Thing", "b"),
                ("X_Forwarded_For", "6.6.6.6"),
                ("Cookie", "a=1"),
                ("Cookie", "b=2"),
            ]:
                conn.putheader(name, value)
            conn.endheaders()
            raw = conn.getresponse().read()
        finally:
            conn.close()
    environ = json.loads(raw)
    assert environ["HTTP_X_THING"] == "a, b"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_FORWARDED_FOR" not in environ
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("example.org", "8443")


def test_post_body_reaches_wsgi_input() -> None:
    """A Content-Length body is read through wsgi.input, with CONTENT_TYPE and CONTENT_LENGTH."""
    with mounted(validator(environ_app)) as server:
        status, _, body = request(
            server, "POST", "/app/form", b"a=1&b=2", {"Content-Type": "text/plain"}
        )
    environ = json.loads(body)
    assert status == 200
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("text/plain", "7")
    assert environ["body"] == "a=1&b=2"


def lines_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Answers with the lines of a chunked body, one per line of output, as readline saw them."""
    stream = environ["wsgi.input"]
    first = stream.readline()
    rest = list(stream)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr([first, *rest]).encode()]


def test_chunked_body_read_by_lines() -> None:
    """readline and iteration split a chunked body at newlines, across chunk boundaries."""
    with mounted(validator(lines_app)) as server:
        status, _, body = request(server, "POST", "/app/", iter([b"one\ntw", b"o\nthr", b"ee"]))
    assert status == 200
    assert body == repr([b"one\n", b"two\n", b"three"]).encode()


def test_declared_body_over_max_upload_is_413_before_the_app_runs() -> None:
    """A Content-Length over --max-upload is refused with 413 and the app is never called."""
    calls = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with mounted(app, max_upload=10) as server:
        status, _, _ = request(server, "POST", "/app/", b"x" * 11)
    assert status == 413
    assert calls == []


def test_chunked_body_over_max_upload_is_413_even_if_the_app_swallows_it() -> None:
    """wsgi.input stops at --max-upload; the answer is 413 whatever the app made of the error."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with contextlib.suppress(PayloadTooLarge):
            environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"stored"]

    with mounted(app, max_upload=1000) as server:
        status, _, _ = request(server, "POST", "/app/", iter([b"x" * 600, b"y" * 600]))
    assert status == 413


def test_start_response_with_exc_info_replaces_the_head() -> None:
    """Before any body is sent, start_response(..., exc_info) replaces status and fields."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("failed after starting")
        except ValueError:
            start_response(
                "503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"sorry"]

    with mounted(validator(app)) as server:
        assert request(server, "GET", "/app/")[::2] == (503, b"sorry")


def test_second_start_response_without_exc_info_is_a_500() -> None:
    """Calling start_response twice without exc_info is an application error: 500."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b""]

    with mounted(app) as server:
        assert request(server, "GET", "/app/")[0] == 500


def test_write_callable_output_comes_before_the_iterable() -> None:
    """What write() was given is sent first, then the returned iterable."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"then ")
        return [b"returned"]

    with mounted(validator(app)) as server:
        assert request(server, "GET", "/app/")[2] == b"written then returned"


def test_streaming_body_is_sent_as_produced_and_closed() -> None:
    """A generator's first chunk reaches the client before the next is produced; close() runs."""
    go_on = threading.Event()
    closed = threading.Event()

    class Stream:
        def __iter__(self) -> Iterator[bytes]:
            yield b"first;"
            if go_on.wait(NET_TIMEOUT):
                yield b"second"

        def close(self) -> None:
            closed.set()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Stream()

    with mounted(validator(app)) as server:
        host, port = server.listen()
        conn = http.client.HTTPConnection(host, port, timeout=NET_TIMEOUT)
        try:
            conn.request("GET", "/app/")
            response = conn.getresponse()
            assert response.getheader("Transfer-Encoding") == "chunked"
            assert response.read1() == b"first;"
            go_on.set()
            assert response.read() == b"second"
        finally:
            conn.close()
        assert closed.wait(NET_TIMEOUT)


def test_close_is_called_when_the_body_fails() -> None:
    """An iterable that raises mid-body is still closed, and the connection dropped."""
    closed = threading.Event()

    class Failing:
        def __iter__(self) -> Iterator[bytes]:
            yield b"partial"
            raise RuntimeError("broken stream")

        def close(self) -> None:
            closed.set()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Failing()

    with mounted(app) as server:
        with pytest.raises(http.client.IncompleteRead):
            request(server, "GET", "/app/")
        assert closed.wait(NET_TIMEOUT)


def test_head_request_reaches_the_app_and_sends_no_body() -> None:
    """HEAD is passed to the application as HEAD; the connection drops the body."""
    seen = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(environ["REQUEST_METHOD"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"twelve bytes"]

    with mounted(validator(app)) as server:
        status, _, body = request(server, "HEAD", "/app/")
    with mounted(app) as server:
        _, headers, _ = request(server, "HEAD", "/app/")
    assert (status, body, seen) == (200, b"", ["HEAD", "HEAD"])
    assert headers["Content-Length"] == "12"


@pytest.mark.parametrize(
    ("fields", "why"),
    [([("Connection", "close")], "hop-by-hop"), ([("X-Bad", 1)], "not str")],
    ids=["hop-by-hop", "non-str"],
)
def test_bad_response_fields_are_a_500(fields: list[tuple[str, Any]], why: str) -> None:
    """Hop-by-hop or non-str header fields from the application are a 500, not sent."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", fields)
        return [b"x"]

    with mounted(app) as server:
        assert request(server, "GET", "/app/")[0] == 500, why


def test_app_that_never_calls_start_response_is_a_500() -> None:
    """Returning a body without start_response is an application error: 500."""
    with mounted(lambda environ, start_response: [b"x"]) as server:
        assert request(server, "GET", "/app/")[0] == 500


def plain_request(method: str = "GET", path: str = "/files/data") -> Request:
    return Request(method, path, path, "", Headers(), "1.1", ("127.0.0.1", 1), RequestBody.empty())


def test_file_wrapper_becomes_a_sendfile_body(tmp_path: Path) -> None:
    """wsgi.file_wrapper over a regular file is answered as a file body (sent with sendfile),
    from its current position, capped by the app's Content-Length."""
    data = tmp_path / "data"
    data.write_bytes(bytes(range(256)) * 400)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        file = data.open("rb")
        file.seek(100)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](file, 4096)  # type: ignore[no-any-return]

    response = WSGIHandler(app, prefix="/files")(plain_request())
    assert response.file_length == 256 * 400 - 100
    assert not isinstance(response.body, (bytes, FileWrapper))
    response.close_body()

    with mounted(app, prefix="/files") as server:
        status, _, body = request(server, "GET", "/files/data")
    assert (status, body) == (200, data.read_bytes()[100:])


def test_file_wrapper_over_a_non_file_is_iterated() -> None:
    """A wrapped object without a descriptor is read in blocks and streamed."""
    import io

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"abc" * 10), 7)  # type: ignore[no-any-return]

    with mounted(validator(app)) as server:
        assert request(server, "GET", "/app/")[::2] == (200, b"abc" * 10)


# -- Flask, a real framework on the same core ----------------------------------------------------


@pytest.fixture
def flask_app(tmp_path: Path) -> WSGIApplication:
    flask = pytest.importorskip("flask", reason="flask is not installed (pip install -e .[test])")
    (tmp_path / "report.bin").write_bytes(b"\x00\x01" * 50_000)
    app = flask.Flask("flaskapp")

    @app.get("/hello/<name>")  # type: ignore[untyped-decorator]
    def hello(name: str) -> str:
        return f"hello {name} from {flask.request.script_root}{flask.request.path}"

    @app.post("/echo")  # type: ignore[untyped-decorator]
    def echo() -> Any:
        return {"length": len(flask.request.get_data()), "form": flask.request.form.to_dict()}

    @app.get("/report")  # type: ignore[untyped-decorator]
    def report() -> Any:
        return flask.send_file(tmp_path / "report.bin")

    @app.get("/stream")  # type: ignore[untyped-decorator]
    def stream() -> Any:
        return flask.Response((f"{i}\n" for i in range(5)), mimetype="text/plain")

    return app  # type: ignore[no-any-return]


def test_flask_app_over_real_sockets(flask_app: WSGIApplication, tmp_path: Path) -> None:
    """A Flask app mounted at /shop answers routes, forms, send_file and streaming responses."""
    with mounted(flask_app, prefix="/shop") as server:
        assert request(server, "GET", "/shop/hello/ann")[::2] == (
            200,
            b"hello ann from /shop/hello/ann",
        )
        status, _, body = request(
            server,
            "POST",
            "/shop/echo",
            b"a=1&b=two",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200
        assert json.loads(body) == {"length": 9, "form": {"a": "1", "b": "two"}}
        status, headers, body = request(server, "GET", "/shop/report")
        assert (status, body) == (200, (tmp_path / "report.bin").read_bytes())
        assert headers["Content-Length"] == "100000"
        assert request(server, "GET", "/shop/stream")[2] == b"0\n1\n2\n3\n4\n"
        assert request(server, "GET", "/shop/missing")[0] == 404
        assert request(server, "GET", "/elsewhere")[0] == 404


def test_flask_upload_over_max_upload_is_413(flask_app: WSGIApplication) -> None:
    """--max-upload bounds what Flask can read: a larger body is 413."""
    with mounted(flask_app, prefix="/shop", max_upload=1000) as server:
        assert request(server, "POST", "/shop/echo", b"x" * 2000)[0] == 413
        assert request(server, "POST", "/shop/echo", iter([b"x" * 800] * 2))[0] == 413


def test_app_errors_are_logged_not_leaked(caplog: pytest.LogCaptureFixture) -> None:
    """An application that raises gets a plain 500 and its traceback in the error log."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raise KeyError("secret detail")

    with caplog.at_level("ERROR", logger="webserver.error"), mounted(app) as server:
        status, _, body = request(server, "GET", "/app/")
    assert status == 500 and b"secret" not in body
    assert "secret detail" in caplog.text


def test_exc_info_after_the_body_started_reraises_and_cuts_the_response() -> None:
    """Once body bytes went out, start_response(..., exc_info) re-raises: the response is cut
    off (no second head), and the iterable is still closed."""
    closed = threading.Event()

    class Late:
        def __init__(self, start_response: StartResponse) -> None:
            self.start_response = start_response

        def __iter__(self) -> Iterator[bytes]:
            yield b"partial"
            try:
                raise ValueError("late failure")
            except ValueError:
                self.start_response("500 Internal Server Error", [], sys.exc_info())
            yield b"never"

        def close(self) -> None:
            closed.set()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Late(start_response)

    with mounted(app) as server:
        with pytest.raises(http.client.IncompleteRead) as caught:
            request(server, "GET", "/app/")
        assert caught.value.partial == b"partial"
        assert closed.wait(NET_TIMEOUT)
