"""Folder listings rendered from values: order, escaping, HTML5, JSON and negotiation."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from webserver.listing import (
    ListingEntry,
    listing_etag,
    render_html,
    render_json,
    sort_entries,
    wants_json,
)

MTIME = 1_780_000_000.0


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.texts: list[str] = []
        self._in_a = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"] or "")
            self._in_a = True
            self.texts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_a = False

    def handle_data(self, data: str) -> None:
        if self._in_a:
            self.texts[-1] += data


def links(page: str) -> tuple[list[str], list[str]]:
    parser = _Links()
    parser.feed(page)
    return parser.hrefs, parser.texts


def test_folders_first_then_files_by_name() -> None:
    """Folders come before files; each group is sorted by name."""
    entries = [ListingEntry("b.txt", False, 1, MTIME), ListingEntry("z", True, 0, MTIME)]
    entries += [ListingEntry("a.txt", False, 2, MTIME), ListingEntry("c", True, 0, MTIME)]
    assert [e.name for e in sort_entries(entries)] == ["c", "z", "a.txt", "b.txt"]


def test_html5_with_charset_parent_size_and_time() -> None:
    """The page is HTML5 with a charset, a parent link, sizes and UTC times."""
    page = render_html("/docs/", [ListingEntry("r.txt", False, 1536, MTIME)], parent=True)
    assert page.startswith("<!DOCTYPE html>\n")
    assert '<meta charset="utf-8">' in page
    assert '<a href="../">../</a>' in page
    assert '<td title="1536">1.5K</td>' in page
    assert "2026-05-28T20:26:40Z" in page
    assert "<title>Index of /docs/</title>" in page
    assert "../" not in render_html("/", [], parent=False)


@given(
    st.lists(
        st.text(
            st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"),
            min_size=1,
            max_size=20,
        ),
        max_size=8,
        unique=True,
    )
)
def test_every_name_round_trips_through_link_and_text(names: list[str]) -> None:
    """Any name is one relative link that decodes back to it and one text equal to it: no
    markup, query, fragment or scheme can be injected."""
    entries = [ListingEntry(name, False, 0, MTIME) for name in names]
    hrefs, texts = links(render_html("/<x>/", entries, parent=False))
    assert sorted(unquote(h) for h in hrefs) == sorted(names)
    assert sorted(texts) == sorted(names)
    assert all("/" not in h and ":" not in h and "#" not in h and "?" not in h for h in hrefs)


def test_folders_link_with_a_trailing_slash() -> None:
    """A folder's link ends in '/', so relative links inside it work without a redirect."""
    hrefs, texts = links(render_html("/", [ListingEntry("a b", True, 0, MTIME)], parent=False))
    assert (hrefs, texts) == (["a%20b/"], ["a b/"])


def test_json_has_the_same_entries() -> None:
    """The JSON listing has each entry's name, type, size and time, in the same order."""
    entries = [ListingEntry("f.txt", False, 5, MTIME), ListingEntry("d", True, 0, MTIME)]
    data = json.loads(render_json("/x/", entries))
    assert data == {
        "path": "/x/",
        "entries": [
            {"name": "d", "type": "folder", "size": None, "modified": "2026-05-28T20:26:40Z"},
            {"name": "f.txt", "type": "file", "size": 5, "modified": "2026-05-28T20:26:40Z"},
        ],
    }


def test_wants_json() -> None:
    """?format=json, or an Accept preferring application/json, asks for JSON; browsers and
    curl's */* get HTML."""
    assert wants_json("format=json", None)
    assert wants_json("a=1&format=json", "text/html")
    assert wants_json("", "application/json")
    assert wants_json("", "text/html;q=0.5, application/json")
    assert not wants_json("", "*/*")
    assert not wants_json("", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert not wants_json("", "application/json;q=0")
    assert not wants_json("", "application/json;q=x")
    assert not wants_json("format=html", None)


def test_etag_follows_the_bytes() -> None:
    """Equal bytes give equal strong ETags; any change gives another."""
    assert listing_etag(b"a") == listing_etag(b"a")
    assert listing_etag(b"a") != listing_etag(b"b")
    assert listing_etag(b"a").startswith('"')


class _Forms(HTMLParser):
    """The forms of a page and the inputs in them, as attribute dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str | None]] = []
        self.inputs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self.forms.append(dict(attrs))
        elif tag == "input":
            self.inputs.append(dict(attrs))


def test_upload_form_only_when_asked() -> None:
    """With upload_form, the page carries one multipart POST form to its own URL with a
    multiple file input; without, no form."""
    entries = [ListingEntry("a.txt", False, 1, MTIME)]
    with_form = _Forms()
    with_form.feed(render_html("/docs/", entries, parent=True, upload_form=True))
    assert with_form.forms == [{"method": "post", "enctype": "multipart/form-data"}]
    assert [(i["type"], "multiple" in i) for i in with_form.inputs] == [("file", True)]
    without = _Forms()
    without.feed(render_html("/docs/", entries, parent=True))
    assert (without.forms, without.inputs) == ([], [])
