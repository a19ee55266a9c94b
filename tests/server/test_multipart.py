"""The multipart/form-data parser: boundaries, part headers, streaming in any pieces, and one
precise error for every malformed body."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webserver.multipart import (
    MAX_PART_HEAD,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    form_boundary,
    is_form_data,
    split_header_value,
)


@dataclass
class Part:
    """A parsed part, its content joined."""

    name: str
    filename: str | None
    content_type: str
    content: bytes


def parse(boundary: bytes, pieces: Iterable[bytes], **limits: int) -> list[Part]:
    """Feed ``pieces`` to a parser and gather the parts; checks the events' order."""
    parser = MultipartParser(boundary, **limits)
    parts: list[Part] = []
    open_part: Part | None = None
    for piece in pieces:
        for event in parser.feed(piece):
            if isinstance(event, PartStart):
                assert open_part is None
                open_part = Part(event.name, event.filename, event.content_type, b"")
            elif isinstance(event, PartData):
                assert open_part is not None and event.data
                open_part.content += event.data
            else:
                assert isinstance(event, PartEnd) and open_part is not None
                parts.append(open_part)
                open_part = None
    parser.close()
    assert parser.complete and open_part is None
    return parts


def encode(
    boundary: bytes, parts: list[Part], preamble: bytes = b"", epilogue: bytes = b""
) -> bytes:
    """A body as browsers and curl write it."""
    out = [preamble + b"\r\n" if preamble else b""]
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        out.append(
            b"--" + boundary + b"\r\n"
            b"Content-Disposition: " + disposition.encode() + b"\r\n"
            b"Content-Type: " + part.content_type.encode() + b"\r\n\r\n" + part.content + b"\r\n"
        )
    out.append(b"--" + boundary + b"--" + (b"\r\n" + epilogue if epilogue else b""))
    return b"".join(out)


BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
TWO = [
    Part("file", "a.txt", "text/plain", b"hello\r\n--not the boundary\r\n"),
    Part("note", None, "text/plain", b""),
]


def pieces_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


class TestBoundary:
    @pytest.mark.parametrize(
        ("content_type", "boundary"),
        [
            ("multipart/form-data; boundary=abc", b"abc"),
            ('multipart/form-data; boundary="a b:c?"', b"a b:c?"),
            ("Multipart/Form-Data;boundary=x;", b"x"),
            ("multipart/form-data; charset=utf-8; boundary=" + "b" * 70, b"b" * 70),
        ],
    )
    def test_token_or_quoted(self, content_type: str, boundary: bytes) -> None:
        """The boundary is read as a token or a quoted string, any parameter order."""
        assert is_form_data(content_type)
        assert form_boundary(content_type) == boundary

    @pytest.mark.parametrize(
        "content_type",
        [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            'multipart/form-data; boundary=""',
            "multipart/form-data; boundary=" + "b" * 71,
            'multipart/form-data; boundary="ends in space "',
            'multipart/form-data; boundary="semi;colon"',
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/form-data; boundary=a junk",
            "multipart/mixed; boundary=a",
        ],
    )
    def test_bad_boundary_is_an_error(self, content_type: str) -> None:
        """No boundary, an empty or 71-character one, a bad character or two of them: 400."""
        with pytest.raises(MultipartError) as caught:
            form_boundary(content_type)
        assert caught.value.status == 400

    def test_other_types_are_not_forms(self) -> None:
        """Only multipart/form-data is a form upload."""
        assert not is_form_data(None)
        assert not is_form_data("application/x-www-form-urlencoded")
        assert not is_form_data("multipart/mixed; boundary=a")


class TestParts:
    def test_browser_body(self) -> None:
        """A body as Chromium sends it: file and field, content with a near-boundary line."""
        assert parse(BOUNDARY, [encode(BOUNDARY, TWO)]) == TWO

    def test_preamble_and_epilogue_are_ignored(self) -> None:
        """Text before the first boundary and after the last one is not a part."""
        body = encode(BOUNDARY, TWO, preamble=b"This is a preamble.", epilogue=b"bye\r\n")
        assert parse(BOUNDARY, [body]) == TWO

    def test_padding_after_boundary(self) -> None:
        """Spaces or tabs between a boundary and its CRLF are transport padding."""
        body = encode(BOUNDARY, TWO).replace(BOUNDARY + b"\r\n", BOUNDARY + b" \t \r\n")
        assert parse(BOUNDARY, [body]) == TWO

    def test_filename_star_wins(self) -> None:
        """filename*= (RFC 8187, UTF-8 percent-encoded) takes precedence over filename=."""
        body = (
            b'--b\r\nContent-Disposition: form-data; name=f; filename="plain.txt";'
            b" filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.txt\r\n\r\nx\r\n--b--"
        )
        [part] = parse(b"b", [body])
        assert (part.filename, part.content_type) == ("naïve résumé.txt", "text/plain")

    def test_filename_star_in_an_unknown_charset_falls_back(self) -> None:
        """A filename* in a charset other than UTF-8/ISO-8859-1 leaves filename= in force."""
        body = (
            b"--b\r\nContent-Disposition: form-data; name=f; filename=a.txt;"
            b" filename*=koi8-r''%C1\r\n\r\nx\r\n--b--"
        )
        assert parse(b"b", [body])[0].filename == "a.txt"

    def test_html_escapes_and_quoted_pairs(self) -> None:
        """Browsers write '"' as %22 and CR/LF as %0D/%0A; a lone backslash stays."""
        body = (
            b'--b\r\nContent-Disposition: form-data; name="q%22n"; filename="a%22b\\c\\"d.txt"'
            b"\r\n\r\n\r\n--b--"
        )
        [part] = parse(b"b", [body])
        assert (part.name, part.filename, part.content) == ('q"n', 'a"b\\c"d.txt', b"")

    def test_utf8_filename(self) -> None:
        """A raw UTF-8 file name (as browsers send it) is read as UTF-8."""
        body = (
            '--b\r\nContent-Disposition: form-data; name="f"; filename="日本.txt"\r\n\r\nx\r\n--b--'
        )
        assert parse(b"b", [body.encode()])[0].filename == "日本.txt"

    def test_body_starting_with_dash_boundary_and_no_crlf_in_content(self) -> None:
        """The first delimiter may start the body; a part may hold no CRLF at all."""
        body = b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\nabc\r\n--b--"
        assert parse(b"b", [body]) == [Part("x", None, "text/plain", b"abc")]

    def test_data_streams_before_the_part_ends(self) -> None:
        """A part's content is handed on as it arrives: of a 1 MiB piece, all but less than
        a delimiter's length is out before the part's end is seen."""
        parser = MultipartParser(BOUNDARY)
        events = parser.feed(
            b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=f\r\n\r\n"
        )
        assert [type(e) for e in events] == [PartStart]
        out = parser.feed(b"z" * (1 << 20))
        held = (1 << 20) - sum(len(e.data) for e in out if isinstance(e, PartData))
        assert 0 < held < len(BOUNDARY) + 4

    @given(
        boundary=st.text(alphabet="abcXYZ019'()+_,-./:=? ", min_size=1, max_size=70).filter(
            lambda b: not b.endswith(" ")
        ),
        parts=st.lists(
            st.builds(
                Part,
                name=st.text(alphabet="abc_- é", max_size=10),
                filename=st.none() | st.text(alphabet="abc.- 日", max_size=10),
                content_type=st.sampled_from(["text/plain", "application/octet-stream"]),
                content=st.binary(max_size=300) | st.sampled_from([b"\r\n--", b"--", b"\r\n"]),
            ),
            max_size=5,
        ),
        cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
    )
    def test_property_whole_bytewise_and_in_pieces(
        self, boundary: str, parts: list[Part], cuts: list[int]
    ) -> None:
        """Encoded with a random boundary, parts come back equal whether the body is fed
        whole, byte by byte or in random pieces."""
        delimiter = b"\r\n--" + boundary.encode()
        if any(delimiter in b"\r\n" + p.content + b"\r\n" for p in parts):
            return  # a client picks a boundary that is not in the content
        body = encode(boundary.encode(), parts)
        bound = boundary.encode()
        assert parse(bound, [body]) == parts
        assert parse(bound, [body[i : i + 1] for i in range(len(body))]) == parts
        assert parse(bound, pieces_of(body, cuts)) == parts


class TestErrors:
    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b"", "before its first boundary"),
            (b"no boundary here", "before its first boundary"),
            (b"--b", "right after a boundary"),
            (b"--b\r\nContent-Disposition: form-data; name=x\r\n", "in a part's headers"),
            (b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\nabc", "in a part's content"),
            (b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\nabc\r\n--b\r\n", "headers"),
            (b"--bX\r\n", "a boundary followed by other"),
            (b"--b \t-", "a boundary followed by other"),
            (b"--b\r\n\r\nno headers\r\n--b--", "without Content-Disposition"),
            (b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", "without Content-Disposition"),
            (b"--b\r\nContent-Disposition: attachment; name=x\r\n\r\n\r\n--b--", "form-data"),
            (b"--b\r\nContent-Disposition: form-data\r\n\r\n\r\n--b--", "with a name"),
            (b"--b\r\nno colon\r\n\r\n\r\n--b--", "malformed part header"),
            (b"--b\r\nBad Name: x\r\n\r\n\r\n--b--", "malformed part header"),
            (b"--b\r\n\xff: x\r\n\r\n\r\n--b--", "not UTF-8"),
            (b"--b\r\nContent-Disposition: form-data; name=x; name=y\r\n\r\n\r\n--b--", "twice"),
            (
                b"--b\r\nContent-Disposition: form-data; name=x\r\nContent-Disposition: form-data;"
                b" name=y\r\n\r\n\r\n--b--",
                "twice",
            ),
            (b"--b\r\nContent-Disposition: form-data; name=x junk\r\n\r\n\r\n--b--", "malformed"),
            (
                b"--b\r\nContent-Disposition: form-data; name=x; filename*=nonsense\r\n\r\n"
                b"\r\n--b--",
                "charset'language'value",
            ),
            (
                b"--b\r\nContent-Disposition: form-data; name=x; filename*=UTF-8''%FF\r\n\r\n\r\n"
                b"--b--",
                "filename* is not utf-8",
            ),
        ],
    )
    def test_malformed(self, body: bytes, message: str) -> None:
        """Each malformed body is one MultipartError whose detail says what was wrong."""
        with pytest.raises(MultipartError, match=re.escape(message)):
            parse(b"b", [body])

    def test_header_block_too_large(self) -> None:
        """A part's header block over MAX_PART_HEAD is refused once that many bytes arrived,
        even when its end never comes."""
        parser = MultipartParser(b"b")
        start = b"--b\r\nContent-Disposition: form-data; name=x\r\nX-Pad: "
        parser.feed(start)
        fed = [len(start) - len(b"--b\r\n")]

        def feed_bytewise() -> None:
            while fed[0] < 2 * MAX_PART_HEAD:
                fed[0] += 1
                parser.feed(b"a")

        with pytest.raises(MultipartError, match="header block is over"):
            feed_bytewise()
        assert fed[0] == MAX_PART_HEAD + 4

    def test_header_block_at_the_limit_is_fine(self) -> None:
        """A header block of exactly MAX_PART_HEAD bytes is accepted."""
        head = b"Content-Disposition: form-data; name=x\r\nX-Pad: "
        head += b"a" * (MAX_PART_HEAD - len(head))
        assert len(parse(b"b", [b"--b\r\n" + head + b"\r\n\r\nv\r\n--b--"])) == 1
        with pytest.raises(MultipartError, match="header block"):
            parse(b"b", [b"--b\r\n" + head + b"a\r\n\r\nv\r\n--b--"])

    def test_too_many_parts(self) -> None:
        """One part more than max_parts is refused; max_parts parts are fine."""
        part = b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n"
        assert len(parse(b"b", [part * 3 + b"--b--"], max_parts=3)) == 3
        with pytest.raises(MultipartError, match="more than 3 parts"):
            parse(b"b", [part * 4 + b"--b--"], max_parts=3)

    def test_endless_padding(self) -> None:
        """Padding after a boundary is bounded like a header block."""
        with pytest.raises(MultipartError, match="white space"):
            parse(b"b", [b"--b" + b" " * (MAX_PART_HEAD + 1)])

    def test_bad_parameters(self) -> None:
        """Header parameters that are not ``; name=value`` are refused."""
        assert split_header_value('form-data; name="a;b"; x=y') == (
            "form-data",
            {"name": "a;b", "x": "y"},
        )
        for bad in ['form-data; name="unterminated', "form-data; =x", "form-data; name"]:
            with pytest.raises(MultipartError):
                split_header_value(bad)

    @given(
        st.lists(
            st.binary(max_size=40)
            | st.sampled_from(
                [
                    b"--b",
                    b"\r\n--b",
                    b"\r\n",
                    b"--",
                    b"Content-Disposition: form-data; name=x",
                    b'; filename="f"',
                    b"\r\n\r\n",
                    b" ",
                ]
            ),
            max_size=25,
        ),
        st.lists(st.integers(min_value=0, max_value=600), max_size=8),
    )
    def test_property_arbitrary_bytes(self, chunks: list[bytes], cuts: list[int]) -> None:
        """Arbitrary bytes give parts or a MultipartError, never another exception, and the
        same answer in any pieces."""
        body = b"".join(chunks)
        outcomes: list[list[Part] | None] = []
        for pieces in ([body], pieces_of(body, cuts), [body[i : i + 1] for i in range(len(body))]):
            try:
                outcomes.append(parse(b"b", pieces, max_parts=5, max_head=64))
            except MultipartError:
                outcomes.append(None)
        assert outcomes[0] == outcomes[1] == outcomes[2]
