"""The plain subset of HTTP/1.1's message grammar that the fast paths of both packages accept.

Rules: a field name is a token (RFC 9110 §5.1); a plain field value is visible characters
(obs-text included) with single runs of spaces or tabs between them -- stricter than h11, which
also allows control characters, so a head with one of those goes to h11; a head ends at a LF, an
optional CR and a LF (h11's rule); 204 and 304 responses never have a body, whatever their
Content-Length says (RFC 9112 §6.3). Patterns are text (``str``) for heads decoded as
ISO-8859-1, except :data:`HEAD_END`, which scans the raw bytes.
"""

from __future__ import annotations

import re

#: A field name: one or more token characters.
FIELD_NAME = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
#: A plain field value (possibly empty), without the optional whitespace around it.
FIELD_VALUE = r"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?"
#: The end of a head by h11's rule (a LF, an optional CR, a LF).
HEAD_END = re.compile(rb"\n\r?\n")
#: Statuses whose responses never have a body (RFC 9112 §6.3).
NO_BODY_STATUSES = frozenset({204, 304})
