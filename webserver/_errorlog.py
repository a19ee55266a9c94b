"""Bounds on the error log, so that no client can fill a disk through it.

Rules: every entry is bounded -- its message is cut to ``MAX_MESSAGE_CHARS`` and its traceback to
``MAX_TRACEBACK_CHARS`` (the start, which says where, and the end, which says what); the same
error (same level, message and exception) repeated within ``REPEAT_WINDOW`` seconds of its last
entry is not logged again but counted, and the count is added to its next entry, or logged on its
own when the filter is removed (the server stops). A request that fails the same way a thousand
times a second thus costs one bounded entry a second, whatever the failure looks like.

The server installs one :class:`BoundedErrorLog` on the ``webserver.error`` logger while it
serves (:func:`bound_error_log`); it works with any handler and formatter, as it only rewrites
the record (``msg``, ``args``, ``exc_text``, ``stack_info``) before handlers see it.
"""

from __future__ import annotations

import collections
import logging
import threading
import traceback
from collections.abc import Callable

#: Longest message kept, in characters; a request target in a message is at most 8 KiB already.
MAX_MESSAGE_CHARS = 2048
#: Longest traceback (or stack) kept, in characters: enough for the handler's frames and the
#: exception, where a recursion error with chained exceptions once wrote 3.2 MB per request.
MAX_TRACEBACK_CHARS = 4096
#: Of a cut traceback, this much of the start is kept; the rest of the budget is its end.
TRACEBACK_HEAD_CHARS = 1024
#: The same error within this many seconds of its last entry is counted, not logged.
REPEAT_WINDOW = 1.0
#: Distinct errors remembered for counting; past this, the oldest are forgotten with their counts,
#: so a stream of ever-different errors cannot grow memory.
MAX_REMEMBERED_ERRORS = 256

_Key = tuple[int, str, str]


def cut_text(text: str, limit: int, head: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its first ``head`` and last characters
    with a line saying how much was cut between them."""
    if len(text) <= limit:
        return text
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[-tail:]}"


def format_exception(exc: BaseException) -> str:
    """The traceback as ``Formatter.formatException`` writes it, cut to ``MAX_TRACEBACK_CHARS``
    without ever holding more than its kept start and end: a chained recursion error formats to
    megabytes."""
    head_budget = TRACEBACK_HEAD_CHARS
    tail_budget = MAX_TRACEBACK_CHARS - TRACEBACK_HEAD_CHARS
    head: list[str] = []
    tail: collections.deque[str] = collections.deque()
    head_len = tail_len = total = 0
    for chunk in traceback.TracebackException.from_exception(exc, compact=True).format():
        total += len(chunk)
        if head_len < head_budget:
            head.append(chunk)
            head_len += len(chunk)
            continue
        tail.append(chunk)
        tail_len += len(chunk)
        while tail_len - len(tail[0]) >= tail_budget:
            tail_len -= len(tail.popleft())
    head_text, tail_text = "".join(head), "".join(tail)
    if head_len + tail_len == total:  # nothing was dropped on the way
        return cut_text((head_text + tail_text).rstrip("\n"), MAX_TRACEBACK_CHARS, head_budget)
    cut = total - head_budget - tail_budget
    kept_head, kept_tail = head_text[:head_budget], tail_text[-tail_budget:]
    return f"{kept_head}\n[... {cut} characters cut ...]\n{kept_tail}".rstrip("\n")


class BoundedErrorLog(logging.Filter):
    """A logger filter that bounds each entry and counts repeats instead of logging them."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        #: Per error: when its last entry was logged and how many repeats were dropped since.
        self._seen: collections.OrderedDict[_Key, tuple[float, int]] = collections.OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        _bound(record)
        key = (record.levelno, record.getMessage(), _exception_key(record))
        with self._lock:
            last = self._seen.get(key)
            if last is not None and record.created - last[0] < REPEAT_WINDOW:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            self._seen[key] = (record.created, 0)
            self._seen.move_to_end(key)
            while len(self._seen) > MAX_REMEMBERED_ERRORS:
                self._seen.popitem(last=False)
        if last is not None and last[1]:
            record.msg = f"{record.msg} [{_repeats(last[1])} after its previous entry]"
        return True

    def flush(self) -> list[tuple[int, str, int]]:
        """Take the repeats not yet reported: (level, message, how many) per error."""
        with self._lock:
            pending = [(key[0], key[1], n) for key, (_, n) in self._seen.items() if n]
            self._seen.clear()
        return pending


def _bound(record: logging.LogRecord) -> None:
    """Cut the message, the traceback and the stack of ``record`` in place."""
    message = record.getMessage()
    # Formatted once here (a repeat note is appended to the text), and cut if too long.
    record.msg = cut_text(message, MAX_MESSAGE_CHARS, MAX_MESSAGE_CHARS // 2)
    record.args = None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        record.exc_text = format_exception(record.exc_info[1])
    elif record.exc_text:
        record.exc_text = cut_text(record.exc_text, MAX_TRACEBACK_CHARS, TRACEBACK_HEAD_CHARS)
    if record.stack_info:
        record.stack_info = cut_text(record.stack_info, MAX_TRACEBACK_CHARS, TRACEBACK_HEAD_CHARS)


def _exception_key(record: logging.LogRecord) -> str:
    if not record.exc_info or record.exc_info[1] is None:
        return ""
    exc = record.exc_info[1]
    return f"{type(exc).__qualname__}: {str(exc)[:MAX_MESSAGE_CHARS]}"


def _repeats(count: int) -> str:
    times = "time" if count == 1 else "times"
    return f"repeated {count} {times} within {REPEAT_WINDOW:g} s, not logged,"


_installed: dict[str, tuple[BoundedErrorLog, int]] = {}
_installed_lock = threading.Lock()


def bound_error_log(logger: logging.Logger) -> Callable[[], None]:
    """Install a :class:`BoundedErrorLog` on ``logger`` (shared while several servers run in one
    process); returns the function that removes it again, logging repeats not yet reported."""
    with _installed_lock:
        bounded, users = _installed.get(logger.name, (None, 0))
        if bounded is None:
            bounded = BoundedErrorLog()
            logger.addFilter(bounded)
        _installed[logger.name] = (bounded, users + 1)
    released = False

    def release() -> None:
        nonlocal released
        with _installed_lock:
            if released:
                return
            released = True
            _, users = _installed[logger.name]
            if users > 1:
                _installed[logger.name] = (bounded, users - 1)
                return
            del _installed[logger.name]
            logger.removeFilter(bounded)
        for level, message, count in bounded.flush():
            logger.log(level, "%s [%s]", message, _repeats(count).rstrip(","))

    return release
