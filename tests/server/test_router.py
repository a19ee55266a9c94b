"""Route matching and method dispatch."""

from __future__ import annotations

import pytest

from webserver import Handler, HTTPError, NotFound, Request, Response, Router
from webserver.headers import Headers


def make_request(method: str, path: str) -> Request:
    return Request(method, path, path, "", Headers(), "1.1", ("127.0.0.1", 1))


class Named(Handler):
    def __init__(self, name: str) -> None:
        self.name = name

    def get(self, request: Request) -> Response:
        return Response.text(f"{self.name} {request.route_path}")


class PostOnly(Handler):
    def post(self, request: Request) -> Response:
        return Response.text("posted")


@pytest.fixture
def router() -> Router:
    router = Router()
    router.add("/", Named("root"), prefix=True)
    router.add("/static", Named("static"), prefix=True)
    router.add("/static/exact", Named("exact"))
    router.add("/form", PostOnly())
    return router


def body(response: Response) -> bytes:
    assert isinstance(response.body, bytes)
    return response.body


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/static/exact", b"exact /static/exact"),
        ("/static/a/b", b"static /a/b"),
        ("/static", b"static /"),
        ("/staticky", b"root /staticky"),
        ("/other", b"root /other"),
    ],
)
def test_exact_then_longest_prefix(router: Router, path: str, expected: bytes) -> None:
    """Exact routes win, then the longest prefix that ends at a segment boundary."""
    assert body(router.dispatch(make_request("GET", path))) == expected


def test_head_falls_back_to_get(router: Router) -> None:
    """A handler with get answers HEAD too."""
    assert router.dispatch(make_request("HEAD", "/x")).status == 200


def test_405_lists_allowed(router: Router) -> None:
    """A known method the route lacks is 405 with Allow."""
    with pytest.raises(HTTPError) as info:
        router.dispatch(make_request("GET", "/form"))
    assert info.value.status == 405
    assert dict(info.value.headers)["Allow"] == "OPTIONS, POST"


def test_501_for_unknown_method(router: Router) -> None:
    """A method the server does not know is 501, whatever the route."""
    with pytest.raises(HTTPError) as info:
        router.dispatch(make_request("BREW", "/x"))
    assert info.value.status == 501


def test_options_answers_allow(router: Router) -> None:
    """OPTIONS without a handler method answers 204 with Allow."""
    response = router.dispatch(make_request("OPTIONS", "/x"))
    assert response.status == 204
    assert response.header("Allow") == "GET, HEAD, OPTIONS"


def test_no_route_is_404() -> None:
    """Without a matching route the answer is 404."""
    router = Router()
    router.add("/only", Named("x"))
    with pytest.raises(NotFound):
        router.dispatch(make_request("GET", "/else"))


def test_shared_route_tries_handlers_in_order() -> None:
    """Two handlers on one route: each answers the methods it has."""
    router = Router()
    router.add("/", Named("files"), prefix=True)
    router.add("/", PostOnly(), prefix=True)
    assert body(router.dispatch(make_request("POST", "/a"))) == b"posted"
    assert body(router.dispatch(make_request("GET", "/a"))) == b"files /a"


def test_route_must_start_with_slash() -> None:
    """A route path without a leading slash is a programming error."""
    with pytest.raises(ValueError, match="start with"):
        Router().add("x", Named("x"))
