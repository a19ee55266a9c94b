"""Request targets to file paths: decoding, refusal, and containment in the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webserver.errors import BadRequest, HTTPError, NotFound
from webserver.paths import (
    MAX_NAME_BYTES,
    TEMP_PREFIX,
    decode_path,
    file_segments,
    hidden_refused,
    numbered_name,
    resolve_inside,
    split_target,
    upload_segments,
)


class TestSplitTarget:
    def test_origin_form(self) -> None:
        """The path and query of an origin-form target are split at the first '?'."""
        assert split_target("/a/b?x=1?y") == ("/a/b", "x=1?y")

    def test_absolute_form_uses_its_path(self) -> None:
        """An absolute-form target (RFC 9112 §3.2.2) is served by its path and query."""
        assert split_target("http://example.com:8080/a%20b?q") == ("/a%20b", "q")
        assert split_target("http://example.com") == ("/", "")

    def test_asterisk(self) -> None:
        """'*' (for OPTIONS) is passed through."""
        assert split_target("*") == ("*", "")

    @pytest.mark.parametrize("target", ["a/b", "ftp://x/y", "http:/x", "x", "http://"])
    def test_other_forms_refused(self, target: str) -> None:
        """Targets that are neither a path nor an http(s) URL are a 400."""
        with pytest.raises(BadRequest):
            split_target(target)


class TestDecodePath:
    def test_decodes_once(self) -> None:
        """%2e%2e decodes to '..'; a double-encoded %252e stays a literal '%2e'."""
        assert decode_path("/%2e%2e/x") == "/../x"
        assert decode_path("/%252e") == "/%2e"

    def test_utf8(self) -> None:
        """Percent-encoded UTF-8 becomes text."""
        assert decode_path("/caf%C3%A9") == "/café"

    @pytest.mark.parametrize("raw", ["/%00", "/a%00b", "/%ff", "/%c3"])
    def test_refused(self, raw: str) -> None:
        """NUL and invalid UTF-8 are a 400."""
        with pytest.raises(BadRequest):
            decode_path(raw)


class TestFileSegments:
    def test_drops_empty_and_dot(self) -> None:
        """Empty and '.' segments do not name anything."""
        assert file_segments("//a/./b/") == ["a", "b"]

    @pytest.mark.parametrize("path", ["/a\\b", "/C:/x", "/c:", "/" + "x" * 256])
    def test_refused(self, path: str) -> None:
        """Backslashes, drive letters and over-long names are a 400."""
        with pytest.raises(BadRequest):
            file_segments(path)


class TestResolveInside:
    def test_inside(self, tmp_path: Path) -> None:
        """A path below the root resolves to that file."""
        root = tmp_path.resolve()
        assert resolve_inside(root, ["a", "b.txt"]) == root / "a" / "b.txt"

    def test_dotdot_that_stays_inside(self, tmp_path: Path) -> None:
        """'..' is fine while the result stays inside the root."""
        root = tmp_path.resolve()
        assert resolve_inside(root, ["a", "..", "b"]) == root / "b"

    @pytest.mark.parametrize("segments", [[".."], ["a", "..", ".."], ["/etc"], ["..", "x"]])
    def test_outside_is_not_found(self, tmp_path: Path, segments: list[str]) -> None:
        """Anything resolving outside the root is NotFound, never a path."""
        root = (tmp_path / "root").resolve()
        root.mkdir()
        with pytest.raises(NotFound):
            resolve_inside(root, segments)

    def test_symlink_out_is_not_found(self, tmp_path: Path) -> None:
        """A symlink pointing outside the root is refused; one pointing inside is followed."""
        root = (tmp_path / "root").resolve()
        root.mkdir()
        (tmp_path / "outside.txt").write_text("x")
        (root / "inside.txt").write_text("y")
        os.symlink(tmp_path / "outside.txt", root / "out")
        os.symlink(root / "inside.txt", root / "in")
        with pytest.raises(NotFound):
            resolve_inside(root, ["out"])
        assert resolve_inside(root, ["in"]) == root / "inside.txt"

    def test_prefix_sibling_is_outside(self, tmp_path: Path) -> None:
        """/srv/www2 is not inside /srv/www, although the string starts the same."""
        root = (tmp_path / "www").resolve()
        root.mkdir()
        (tmp_path / "www2").mkdir()
        with pytest.raises(NotFound):
            resolve_inside(root, ["..", "www2"])

    @given(path=st.text(alphabet=st.sampled_from(list("ab./\\%2e:C\x00")), max_size=30))
    def test_property_inside_or_refused(self, tmp_path: Path, path: str) -> None:
        """Any decoded path either maps inside the root or is refused with 400/404."""
        root = (tmp_path / "root").resolve()
        root.mkdir(exist_ok=True)
        try:
            resolved = resolve_inside(root, file_segments(decode_path("/" + path)))
        except (BadRequest, NotFound):
            return
        assert os.path.commonpath([root, resolved]) == str(root)


class TestUploadSegments:
    def test_nested(self) -> None:
        """A nested upload name yields its segments."""
        assert upload_segments("/a/b/c.txt") == ["a", "b", "c.txt"]

    @pytest.mark.parametrize(
        "path",
        [
            "/",
            "/a/",
            "/a//b",
            "/../x",
            "/a/../x",
            "/./x",
            "/a\x01b",
            "/a\x7fb",
            "/a\\b",
            "/C:x",
            "/" + "n" * 256,
            "/" + TEMP_PREFIX + "x",
        ],
    )
    def test_refused(self, path: str) -> None:
        """Folders, dot or empty segments, control characters, long or reserved names: 400."""
        with pytest.raises(BadRequest):
            upload_segments(path)


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("report.txt", 0, "report.txt"),
        ("report.txt", 1, "report-1.txt"),
        ("a.tar.gz", 2, "a-2.tar.gz"),
        ("README", 3, "README-3"),
        (".env", 1, ".env-1"),
        (".config.json", 1, ".config-1.json"),
    ],
)
def test_numbered_name(name: str, n: int, expected: str) -> None:
    """Numbered variants keep the extension so the file still opens with the right program."""
    assert numbered_name(name, n) == expected


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("s" * 251 + ".txt", 1, "s" * 249 + "-1.txt"),
        ("s" * 251 + ".txt", 10_000, "s" * 245 + "-10000.txt"),
        ("é" * 125 + "x.txt", 1, "é" * 124 + "-1.txt"),  # whole characters, never half of one
        ("a." + "x" * 253, 1, "a-1." + "x" * 251),  # a one-character stem: the suffix gives way
        ("." + "e" * 254, 1, "." + "e" * 252 + "-1"),
    ],
)
def test_numbered_name_fits_the_name_limit(name: str, n: int, expected: str) -> None:
    """A name at the 255-byte limit loses characters of its stem so its numbered name fits."""
    assert len(name.encode()) == MAX_NAME_BYTES
    numbered = numbered_name(name, n)
    assert numbered == expected
    assert len(numbered.encode()) <= MAX_NAME_BYTES


class TestHidden:
    @pytest.mark.parametrize(
        ("segments", "refused"),
        [
            (["a", "b.txt"], False),
            ([".env"], True),
            (["a", ".git", "config"], True),
            (["a", "..", "b"], False),
            ([".well-known", "security.txt"], False),
            ([".well-known", ".x"], True),
            (["a", ".well-known", "x"], True),
            ([TEMP_PREFIX + "1"], True),
        ],
    )
    def test_dot_names_refused_by_default(self, segments: list[str], refused: bool) -> None:
        """Any dot-name segment but '..' is refused, except a leading .well-known."""
        assert hidden_refused(segments, show_hidden=False) is refused

    def test_show_hidden_still_refuses_temporaries(self) -> None:
        """show_hidden serves dot-names, never upload temporaries."""
        assert not hidden_refused([".git", "config"], show_hidden=True)
        assert hidden_refused(["a", TEMP_PREFIX + "1"], show_hidden=True)

    @pytest.mark.parametrize("path", ["/.env", "/a/.git/hooks/pre-commit", "/.well-known/x"])
    def test_uploads_to_dot_names_are_403(self, path: str) -> None:
        """An upload may not create a hidden name (.htaccess, .git/hooks, .env)."""
        with pytest.raises(HTTPError) as info:
            upload_segments(path)
        assert info.value.status == 403
