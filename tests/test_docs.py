"""The Python examples in README.md and docs/ run as written."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import webserver

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for index, code in enumerate(BLOCK.findall(page.read_text(encoding="utf-8"))):
            found.append((f"{page.name}#{index + 1}", code))
    return found


@pytest.mark.parametrize(("where", "code"), examples(), ids=[w for w, _ in examples()])
def test_example_runs(
    where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each example runs without error (its own asserts check what it shows)."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs_example"}
    exec(compile(code, where, "exec"), namespace)  # noqa: S102 - our own documentation


def test_library_guide_has_examples() -> None:
    """The library guide is found and contributes examples."""
    assert sum(where.startswith("library.md") for where, _ in examples()) >= 5


def test_every_fenced_python_example_is_run() -> None:
    """No Python example hides from the runner behind another fence spelling (py, python3)."""
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"```(py|python3|pycon)\n", text), page.name


def _served_once(
    code: str, where: str, path: str, monkeypatch: pytest.MonkeyPatch, name: str = "__main__"
) -> bytes:
    """Run an example whose last step is ``serve_forever``: on a free port, it answers one
    request for ``path`` and returns, so the example's promise can be checked."""
    answers: list[bytes] = []

    class OneRequestServer(webserver.Server):
        def __init__(self, **settings: Any) -> None:
            super().__init__(**{**settings, "port": 0})

        def serve_forever(self, *, handle_signals: bool = True) -> None:
            with self, urllib.request.urlopen(self.url + path, timeout=10) as reply:
                answers.append(reply.read())

    monkeypatch.setattr(webserver, "Server", OneRequestServer)
    exec(compile(code, where, "exec"), {"__name__": name})  # noqa: S102 - our own documentation
    assert len(answers) == 1
    return answers[0]


def test_readme_handler_example_answers_as_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's handler example serves "hello" at /hello (on a free port, for one request)."""
    (code,) = BLOCK.findall(README.read_text(encoding="utf-8"))
    (tmp_path / "www").mkdir()
    monkeypatch.chdir(tmp_path)
    assert _served_once(code, "README.md", "hello", monkeypatch) == b"hello\n"


def test_library_guide_first_handler_greets_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library guide's first example, run as a script, answers /hello?name=... by name."""
    code = BLOCK.findall((DOCS / "library.md").read_text(encoding="utf-8"))[0]
    monkeypatch.chdir(tmp_path)
    answer = _served_once(code, "library.md#1", "hello?name=docs", monkeypatch)
    assert answer == b"hello, docs\n"
