"""Hypothesis strategies for command-file lines: valid ones, near misses and noise."""

from __future__ import annotations

import re

from hypothesis import strategies as st

methods = st.sampled_from(["GET", "get", "Get", "POST", "post", "PoSt"])
bad_methods = st.sampled_from(["PUT", "DELETE", "FETCH", "G3T", "ПОСТ", "po\u017ft"])
#: Any character but controls, surrogates and the two field separators (space and tab): other
#: Unicode spaces are part of a file name.
path_chars = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters=" ")
file_names = st.text(path_chars, min_size=1, max_size=30).filter(lambda s: not s.startswith("#"))
labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
#: A last label read as a number makes the name an IPv4 form other than the dotted quad.
_NUMERIC_LAST = re.compile(r"(?:.*\.)?(?:[0-9]+|0x[0-9a-f]*)")
hostnames = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda name: not _NUMERIC_LAST.fullmatch(name))
)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
ipv4 = st.ip_addresses(v=4).map(str)
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.one_of(
    st.integers(1, 65535).map(str),
    st.integers(1, 65535).map(lambda p: f"({p})"),
)
bad_ports = st.one_of(
    st.sampled_from(["0", "65536", "(0)", "99999999", "-1", "8o", "(80", "80)", "()"]),
    st.integers(65536, 10**9).map(str),
)
separators = st.sampled_from([" ", "  ", "\t", " \t "])


@st.composite
def valid_lines(draw: st.DrawFn) -> str:
    """A line that must parse to a command: the seed grammar, or ``METHOD URL``."""
    if draw(st.booleans()):
        scheme = draw(st.sampled_from(["http", "https", "HTTP"]))
        port = draw(st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")))
        name = draw(file_names.filter(lambda s: "#" not in s and not s.startswith("/")))
        return f"{draw(methods)} {scheme}://{draw(hosts)}{port}/{name}"
    parts = [draw(methods), draw(file_names), draw(hosts)]
    if draw(st.booleans()):
        parts.append(draw(ports))
    sep = draw(separators)
    return draw(st.sampled_from(["", " "])) + sep.join(parts)


@st.composite
def invalid_lines(draw: st.DrawFn) -> str:
    """A line with exactly one thing wrong; it must be reported."""
    kind = draw(st.sampled_from(["method", "port", "missing-host", "extra", "v6"]))
    method, name, host = draw(methods), draw(file_names), draw(hosts)
    if kind == "method":
        return f"{draw(bad_methods)} {name} {host}"
    if kind == "port":
        return f"{method} {name} {host} {draw(bad_ports)}"
    if kind == "missing-host":
        return f"{method} {name}"
    if kind == "extra":
        return f"{method} {name} {host} 80 extra"
    return f"{method} {name} {draw(st.ip_addresses(v=6).map(str).filter(lambda a: ':' in a))}"


any_lines = st.one_of(valid_lines(), invalid_lines(), st.text(max_size=60))
