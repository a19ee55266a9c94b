"""Tests of webclient/commands.py: the command-file grammar and its error reports."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from webclient.commands import (
    MAX_LINE_LENGTH,
    Command,
    _encode_each,
    _InvalidLine,
    _parse_line,
    command_for_url,
    encode_target,
    parse_commands,
    read_command_file,
    read_commands,
)
from webclient.errors import CommandFileError

from .strategies import any_lines, invalid_lines, valid_lines


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /a.txt example.com", Command("GET", "/a.txt", "example.com", 80)),
        ("get a.txt example.com 8080", Command("GET", "/a.txt", "example.com", 8080)),
        ("POST up.bin 127.0.0.1 (8081)", Command("POST", "/up.bin", "127.0.0.1", 8081)),
        ("  Get\t/x/y.html\t[::1]\t(9)  ", Command("GET", "/x/y.html", "::1", 9)),
        ("GET /q?a=1 Host.Example 1", Command("GET", "/q?a=1", "host.example", 1)),
        ("GET / localhost 65535", Command("GET", "/", "localhost", 65535)),
    ],
)
def test_valid_lines_parse(line: str, expected: Command) -> None:
    """Each documented spelling of a command parses to the same fields."""
    assert _parse_line(line) == expected


@pytest.mark.parametrize("line", ["", "   ", "\t", "# GET a b", "   # comment"])
def test_blank_and_comment_lines_are_skipped(line: str) -> None:
    """Blank lines and comments are not commands."""
    assert _parse_line(line) is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("PUT /a host", "unknown method"),
        ("GET", "missing file name"),
        ("GET /a", "missing host"),
        ("GET /a host 0", "port not in 1..65535"),
        ("GET /a host 65536", "port not in 1..65535"),
        ("GET /a host (80", "not a port number"),
        ("GET /a host eighty", "not a port number"),
        ("GET /a host 80 more", "unexpected text"),
        ("GET /a ::1 80", "IPv6 addresses go in brackets"),
        (
            "GET /a 127.0.0.1:8080",
            "the port goes after the host, separated by a space: 127.0.0.1 8080",
        ),
        ("GET /a localhost:8080 80", "the port goes after the host"),
        ("GET /a http://127.0.0.1:8080/ 80", "a URL is not a host name"),
        ("GET http://127.0.0.1:8080/a 80", "unexpected text after the URL: '80'"),
        ("GET ftp://127.0.0.1/a", "not an http:// or https:// URL"),
        ("GET http://user:pw@127.0.0.1/a", "user names and passwords in URLs"),
        ("GET http:///a", "no host in URL"),
        ("GET http://127.0.0.1:/a", "missing port number after ':'"),
        ("GET http://127.0.0.1:x8/a", "not a port number: 'x8'"),
        ("GET http://127.0.0.1:70000/a", "port not in 1..65535"),
        ("GET http://[::1/a", "unclosed '\\['"),
        ("GET http://[::1]x/a", "not a host and port"),
        ("GET http://127.1/a", "not an IPv4 address"),
        ("GET /a [::1 80", "unclosed '['"),
        ("GET /a [nope] 80", "not an IPv6 address"),
        ("GET /a bad_host!name 80", "not a host name"),
        ("GET //evil.example/x host", "starts with '//'"),
        (
            "GET index.html 8080",
            r"'8080' is a number, not a host: is the host missing\? "
            r"\(write: GET index.html HOST 8080\)",
        ),
        ("GET /a 2130706433 80", "is a number, not a host"),
        ("GET /a 0x7f.1 80", "not an IPv4 address: '0x7f.1' .write four numbers"),
        ("GET /a 127.1 80", "not an IPv4 address"),
        ("GET /a 127.0.0.010 80", "not an IPv4 address"),
        ("GET /a 0x7f000001 80", "not an IPv4 address"),
        ("GET /a example.0x1f 80", "not an IPv4 address"),
    ],
)
def test_invalid_lines_say_why(line: str, message: str) -> None:
    """Each kind of mistake is reported with a sentence naming it."""
    pattern = message if "\\" in message else message.replace("(", r"\(").replace("[", r"\[")
    with pytest.raises(_InvalidLine, match=pattern):
        _parse_line(line)


def test_every_invalid_line_is_reported_with_its_number() -> None:
    """A file with several mistakes lists them all, with line numbers, and no command."""
    lines = ["GET /ok host", "FETCH /a host", "", "GET /b host 0", "# fine", "POST /c"]
    with pytest.raises(CommandFileError) as info:
        parse_commands(lines, "commands.txt")
    assert [(e.line, e.message.split(":")[0]) for e in info.value.errors] == [
        (2, "unknown method 'FETCH' (expected GET or POST)"),
        (4, "port not in 1..65535"),
        (6, "missing host name"),
    ]
    assert str(info.value).splitlines()[0].startswith("commands.txt:2: unknown method")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET http://127.0.0.1:8080/a.txt", Command("GET", "/a.txt", "127.0.0.1", 8080)),
        ("get HTTP://Example.COM", Command("GET", "/", "example.com", 80)),
        ("GET http://h.example?q=1#top", Command("GET", "/?q=1", "h.example", 80)),
        ("POST http://[::1]:9/up.bin", Command("POST", "/up.bin", "::1", 9)),
        (
            "GET https://example.com/x%20y",
            Command("GET", "/x%20y", "example.com", 443, scheme="https"),
        ),
        (
            "GET https://[::1]:8443/",
            Command("GET", "/", "::1", 8443, scheme="https"),
        ),
    ],
)
def test_url_lines_parse(line: str, expected: Command) -> None:
    """A URL in place of ``file host port`` gives the same command as the seed grammar."""
    command = _parse_line(line)
    assert command == expected
    assert command is not None and _parse_line(command.to_line()) == command


def test_https_commands_keep_their_scheme_and_print_back_as_urls() -> None:
    """An https URL is handed on as such (url, to_line); http commands print the seed form."""
    command = _parse_line("GET https://example.com/a?b")
    assert command is not None
    assert command.url == "https://example.com:443/a?b"
    assert command.to_line() == "GET https://example.com:443/a?b"
    plain = _parse_line("GET http://example.com:8080/a")
    assert plain is not None and plain.to_line() == "GET /a example.com 8080"


def test_command_for_url_uses_the_command_file_rules() -> None:
    """A URL from the command line parses like a line; a bad one is a CommandFileError."""
    assert command_for_url("head", " http://h.example:81/x ") == Command(
        "HEAD", "/x", "h.example", 81
    )
    with pytest.raises(CommandFileError, match="not an http:// or https:// URL"):
        command_for_url("GET", "h.example/x")


def test_a_bad_url_on_the_command_line_is_named_in_its_error() -> None:
    """Each sentence about a bad one-off URL names the URL (several may be given), and a space
    is called a space, with the escape that works, not a control character."""
    with pytest.raises(CommandFileError) as caught:
        command_for_url("GET", "http://h/a b.txt")
    assert str(caught.value) == "a space in the file name (write it %20) in 'http://h/a b.txt'"
    with pytest.raises(
        CommandFileError, match=r"^port not in 1\.\.65535: '70000' in 'http://h:70000/'$"
    ):
        command_for_url("GET", "http://h:70000/")
    with pytest.raises(CommandFileError, match=r"^control characters in the file name in '"):
        command_for_url("GET", "http://h/a\x01b")
    with pytest.raises(CommandFileError) as caught:
        command_for_url("GET", "ftp://h/")
    assert str(caught.value) == "not an http:// or https:// URL: 'ftp://h/'"  # named once


def test_read_commands_from_a_stream_names_it_in_errors() -> None:
    """Commands read from a stream (stdin) report errors under the name given."""
    stream = io.BytesIO(b"GET /a host 8080\nGET http://host:8081/b\n")
    assert [c.port for c in read_commands(stream)] == [8080, 8081]
    with pytest.raises(CommandFileError, match=r"^<stdin>:2: missing host name"):
        read_commands(io.BytesIO(b"GET /a host\nGET /b\n"))


def test_read_command_file_counts_lines_like_an_editor(tmp_path: Path) -> None:
    """Line numbers follow newline characters, with CRLF endings and a form feed inside."""
    path = tmp_path / "cmds.txt"
    path.write_bytes(b"GET /a host\r\n\x0c\r\nGET /b host 0\r\n")
    with pytest.raises(CommandFileError) as info:
        read_command_file(path)
    assert [e.line for e in info.value.errors] == [3]


def test_unreadable_and_non_utf8_files_are_command_file_errors(tmp_path: Path) -> None:
    """A missing file and a binary file are reported, not raised as OS errors."""
    with pytest.raises(CommandFileError, match="cannot read"):
        read_command_file(tmp_path / "missing.txt")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"GET /\xff host\n")
    with pytest.raises(CommandFileError, match="not UTF-8"):
        read_command_file(binary)


def test_command_urls_targets_and_local_names() -> None:
    """The wire target is percent-encoded; the saved name is decoded and drops the query."""
    command = _parse_line("GET /dir/na%20me é.txt?x=1 [::1] 8080".replace(" é", "é"))
    assert command is not None
    assert command.target == "/dir/na%20me%C3%A9.txt?x=1"
    assert command.url == "http://[::1]:8080/dir/na%20me%C3%A9.txt?x=1"
    assert command.local_name == "dir/na meé.txt"
    index = _parse_line("GET /docs/ host")
    assert index is not None
    assert index.local_name == "docs/index.html"


@given(st.text(alphabet=st.sampled_from("aZ09-._~!$&'()*+,;=:@/?%2fFgG é\x00\x7f#[]"), max_size=20))
def test_encode_target_shortcut_agrees_with_the_full_loop(path: str) -> None:
    assert encode_target(path) == _encode_each(path)


def test_encode_target_keeps_escapes_and_encodes_lone_percent() -> None:
    """Existing %XX escapes stay; a % not followed by two hex digits is encoded."""
    assert encode_target("/a%2Fb%zz%") == "/a%2Fb%25zz%25"


@given(valid_lines())
def test_valid_lines_round_trip(line: str) -> None:
    """A generated valid line parses, and its printed form parses to an equal command."""
    command = _parse_line(line)
    assert command is not None
    assert _parse_line(command.to_line()) == command


@given(invalid_lines())
def test_invalid_lines_are_reported(line: str) -> None:
    """A generated line with one mistake is reported with its line number."""
    with pytest.raises(CommandFileError) as info:
        parse_commands(["# header", line], "c.txt")
    assert [e.line for e in info.value.errors] == [2]


def _check_any_line(line: str) -> None:
    try:
        commands = parse_commands(["", line], "c.txt")
    except CommandFileError as exc:
        error = exc
    else:
        for command in commands:
            assert command.line == 2
            assert _parse_line(command.to_line()) == command
        return
    assert [e.line for e in error.errors] == [2]
    assert str(error).startswith("c.txt:2: ")


@given(any_lines)
@example("GET http://a/://")  # a path holding "://" printed back is still a path
def test_any_line_parses_and_prints_back_or_is_reported(line: str) -> None:
    """Any text either parses to a command that prints back equivalently, or is reported."""
    _check_any_line(line)


@pytest.mark.slow
@pytest.mark.timeout(600)
@settings(max_examples=20_000, deadline=None)
@given(st.one_of(any_lines, st.text(max_size=200)))
def test_any_line_property_long_run(line: str) -> None:
    """The same property over many more examples (slow)."""
    _check_any_line(line)


def test_fields_are_separated_by_spaces_and_tabs_only() -> None:
    """Other Unicode spaces (NBSP, EM SPACE) belong to the field they are in."""
    (command,) = parse_commands(["GET caf\u00e9\u00a0menu.html 127.0.0.1 8080"])
    assert command.path == "/caf\u00e9\u00a0menu.html"
    assert command.target == "/caf%C3%A9%C2%A0menu.html"
    assert command.local_name == "caf\u00e9\u00a0menu.html"
    # An EM SPACE does not start a new field: this line has a file name and no host.
    with pytest.raises(CommandFileError, match="missing host name"):
        parse_commands(["GET /x\u2003127.0.0.1"])
    with pytest.raises(CommandFileError, match="unknown method"):
        parse_commands(["\u3000GET /x host"])


def test_command_file_with_utf8_bom(tmp_path: Path) -> None:
    """A UTF-8 byte order mark at the start of the file is ignored: line 1 is a command."""
    path = tmp_path / "commands.txt"
    path.write_bytes(b"\xef\xbb\xbfGET a.txt 127.0.0.1 8080\r\nGET b.txt 127.0.0.1 8080\r\n")
    first, second = read_command_file(path)
    assert (first.method, first.path, first.line) == ("GET", "/a.txt", 1)
    assert (second.path, second.line) == ("/b.txt", 2)


# -- large files ---------------------------------------------------------------------------------


def test_a_large_command_file_is_read_in_constant_memory(tmp_path: Path) -> None:
    """Memory follows the commands kept, not the file's size: 2 MB of comments cost little."""
    path = tmp_path / "big.txt"
    with path.open("w") as file:
        file.write("GET /first host\n")
        line = "# " + "x" * 78 + "\n"
        file.write(line * (2 * 1024 * 1024 // len(line)))
        file.write("GET /last host\n")
    tracemalloc.start()
    try:
        commands = read_command_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [c.path for c in commands] == ["/first", "/last"]
    assert peak < 1024 * 1024


def test_too_many_commands_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the command limit the file is refused with a sentence, not a MemoryError."""
    monkeypatch.setattr("webclient.commands.MAX_COMMANDS", 3)
    path = tmp_path / "cmds.txt"
    path.write_text("GET /a host\n" * 3)
    assert len(read_command_file(path)) == 3
    path.write_text("GET /a host\n" * 4)
    with pytest.raises(CommandFileError, match=r"cmds\.txt: more than 3 commands \(split it"):
        read_command_file(path)


def test_invalid_lines_past_the_listed_ones_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of garbage lists the first invalid lines and counts the others."""
    monkeypatch.setattr("webclient.commands.MAX_LISTED_ERRORS", 2)
    path = tmp_path / "cmds.txt"
    path.write_text("GET /ok host\n" + "nonsense\n" * 5)
    with pytest.raises(CommandFileError) as info:
        read_command_file(path)
    assert [e.line for e in info.value.errors] == [2, 3]
    assert str(info.value).splitlines()[-1] == f"{path}: 3 more invalid lines"


def test_an_overlong_line_is_a_line_error(tmp_path: Path) -> None:
    """A line past the length limit is reported as such, and the lines after it keep their
    numbers."""
    path = tmp_path / "cmds.txt"
    path.write_bytes(b"GET /a host\nGET /" + b"x" * MAX_LINE_LENGTH + b" host\nGET /b host 0\n")
    with pytest.raises(CommandFileError) as info:
        read_command_file(path)
    assert [(e.line, e.message) for e in info.value.errors] == [
        (2, f"line longer than {MAX_LINE_LENGTH:,} bytes"),
        (3, "port not in 1..65535: '0'"),
    ]


@settings(max_examples=50)
@given(
    st.lists(valid_lines(), max_size=5),
    st.sampled_from(["\n", "\r\n"]),
    st.sampled_from(["", "\n", "\n\n", "\n# the end\n", "\n \t\n"]),
)
def test_a_command_file_reads_the_same_whole_by_line_and_with_trailing_lines(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], newline: str, trailing: str
) -> None:
    """A command file read from disk gives the commands its lines give one by one, whatever
    its line ends and whatever blank or comment lines trail it (with or without a last
    newline)."""
    expected = parse_commands(lines)
    text = newline.join(lines) + trailing
    path = tmp_path_factory.mktemp("commands") / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    assert read_command_file(path) == expected
    assert parse_commands(text.split("\n")) == expected


def test_a_file_name_holding_a_url_separator_is_a_file_name() -> None:
    """Only a field that starts with a scheme and "://" is a URL; "/a://b" is a file name."""
    (command,) = parse_commands(["GET /a://b example.org 8080"])
    assert (command.path, command.host, command.port) == ("/a://b", "example.org", 8080)
