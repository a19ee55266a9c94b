"""A read-only view of HTTP header fields, decoded once from h11's bytes.

Names are lower-case (h11 already normalises them); values are ISO-8859-1 text, the only charset
RFC 9110 §5.5 lets a field carry without loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence


class Headers(Sequence[tuple[str, str]]):
    """Header fields in the order received; ``get`` and ``get_all`` are case-insensitive."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields = tuple((name.lower(), value) for name, value in fields)

    @classmethod
    def from_raw(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        """Build from h11's ``(name, value)`` byte pairs."""
        headers = cls.__new__(cls)
        headers._fields = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in raw)
        return headers

    @classmethod
    def from_normalized(cls, fields: tuple[tuple[str, str], ...]) -> Headers:
        """Wrap fields whose names are already lower-case, without copying them."""
        headers = cls.__new__(cls)
        headers._fields = fields
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """The field's value; repeated fields are joined with ``, `` (RFC 9110 §5.3)."""
        name = name.lower()
        found = None
        for field, value in self._fields:  # no list: asked several times per request
            if field == name:
                found = value if found is None else f"{found}, {value}"
        return default if found is None else found

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for field, value in self._fields if field == name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            name = name.lower()
            return any(field == name for field, _ in self._fields)
        return name in self._fields

    def __getitem__(self, index: int) -> tuple[str, str]:  # type: ignore[override]
        return self._fields[index]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({list(self._fields)!r})"
