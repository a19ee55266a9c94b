"""Folder listings as HTML5 or JSON, rendered from values (no file system access here).

Rules: folders first, then files, each sorted by name; every name is URL-encoded in links (so
``a b``, ``#``, ``?`` and ``:`` stay names, never a fragment, query or scheme) and HTML-escaped in
text; links are relative, so a listing works under any prefix and ``wget -r -np`` can follow them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from urllib.parse import parse_qsl, quote


@dataclass(frozen=True, slots=True)
class ListingEntry:
    """One name in a folder, as the listing shows it."""

    name: str
    is_dir: bool
    size: int
    mtime: float


def sort_entries(entries: Iterable[ListingEntry]) -> list[ListingEntry]:
    """Folders first, then files; by name within each."""
    return sorted(entries, key=lambda e: (not e.is_dir, e.name))


def _iso(mtime: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))


def _size(size: int) -> str:
    """A size as people read it: ``512``, ``1.5K``, ``23M``."""
    value = float(size)
    for unit in ("", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if not unit:
                return str(size)
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


#: The form a listing carries when uploads are on: it posts to the listing's own URL, the folder.
UPLOAD_FORM = (
    '<form method="post" enctype="multipart/form-data">\n'
    '<input type="file" name="file" multiple required>\n'
    '<button type="submit">Upload</button>\n</form>\n'
)


def render_html(
    url_path: str, entries: Iterable[ListingEntry], *, parent: bool, upload_form: bool = False
) -> str:
    """A valid HTML5 page listing ``entries`` of the folder at ``url_path`` (decoded), with a
    form to upload files into that folder when ``upload_form``."""
    title = escape(f"Index of {url_path}")
    rows = []
    if parent:
        rows.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
    for entry in sort_entries(entries):
        shown = entry.name + ("/" if entry.is_dir else "")
        href = quote(entry.name, safe="") + ("/" if entry.is_dir else "")
        size = (
            "<td>-</td>" if entry.is_dir else f'<td title="{entry.size}">{_size(entry.size)}</td>'
        )
        rows.append(
            f'<tr><td><a href="{escape(href)}">{escape(shown)}</a></td>{size}'
            f"<td>{_iso(entry.mtime)}</td></tr>"
        )
    body = "\n".join(rows)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
        "<table>\n<thead><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr></thead>\n"
        f"<tbody>\n{body}\n</tbody>\n</table>\n{UPLOAD_FORM if upload_form else ''}"
        "</body>\n</html>\n"
    )


def render_json(url_path: str, entries: Iterable[ListingEntry]) -> str:
    """The same listing as a JSON object: ``{"path": ..., "entries": [...]}``."""
    items = [
        {
            "name": entry.name,
            "type": "folder" if entry.is_dir else "file",
            "size": None if entry.is_dir else entry.size,
            "modified": _iso(entry.mtime),
        }
        for entry in sort_entries(entries)
    ]
    return json.dumps({"path": url_path, "entries": items}, ensure_ascii=False) + "\n"


def wants_json(query: str, accept: str | None) -> bool:
    """``?format=json``, or an Accept that prefers ``application/json`` to ``text/html``."""
    if query and ("format", "json") in parse_qsl(query):
        return True
    if not accept:
        return False
    weights: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        weights[media.lower()] = quality
    json_q = weights.get("application/json", 0.0)
    return json_q > 0 and json_q > weights.get("text/html", 0.0)


def listing_etag(body: bytes) -> str:
    """A strong ETag from the rendered bytes: equal listings are equal, whatever their folder."""
    return '"l-' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
