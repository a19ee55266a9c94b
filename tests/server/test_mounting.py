"""Mounting Handler classes, handler plugins and WSGI applications from the command line."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from webserver import ServerConfig
from webserver.cli import main
from webserver.mounting import MountError, handler_plugins, load_app, load_handler, split_spec

from .conftest import http_get, webserver_process

SHOP = """
from webserver import Handler, Response


class Api(Handler):
    def get(self, request):
        return Response.text(f"api {request.route_path}\\n")


class Broken(Handler):
    @classmethod
    def from_config(cls, config):
        raise RuntimeError("needs a database")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"wsgi {environ['SCRIPT_NAME']} {environ['PATH_INFO']}\\n".encode()]


not_callable = 42
"""


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder, made current, holding ``shop.py`` and ``explodes.py`` (imported afresh);
    sys.path and sys.modules are restored afterwards."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "shop.py").write_text(SHOP)
    (folder / "explodes.py").write_text("raise RuntimeError('no config file')\n")
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("shop", "explodes", "demo_hello"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return folder


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/api=pkg.mod:Api", ("/api", "pkg.mod:Api")),
        ("/api/=pkg:Api", ("/api", "pkg:Api")),
        ("pkg:app", ("/", "pkg:app")),
        ("/=pkg:app", ("/", "pkg:app")),
        ("/reports=reports", ("/reports", "reports")),
    ],
)
def test_split_spec(spec: str, expected: tuple[str, str]) -> None:
    """[/prefix=]target, the prefix / when left out, without a trailing slash."""
    assert split_spec(spec) == expected


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("api=shop:Api", "a mount prefix starts with '/'"),
        ("/api=", "nothing to mount"),
        ("/api=shop:", "expected module:attribute"),
        ("/api=missing_module_xyz:Api", "cannot import missing_module_xyz: ModuleNotFoundError"),
        ("/api=explodes:Api", "cannot import explodes: RuntimeError: no config file"),
        ("/api=shop:Nope", "shop has no attribute Nope"),
        ("/api=shop:app", "shop:app is not a webserver.Handler subclass"),
        ("/api=shop:Broken", "shop:Broken failed to start: RuntimeError: needs a database"),
        ("/api=no-such-plugin", "no handler plugin named 'no-such-plugin'"),
    ],
)
def test_bad_handler_is_one_line_exit_2(code: Path, handler: str, message: str) -> None:
    """Every way a --handler can be wrong is one Error: line, exit status 2, no traceback."""
    result = CliRunner().invoke(main, ["run", "--port", "0", "--handler", handler])
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--app", "shop:not_callable"], "not a WSGI application (not callable)"),
        (["--app", "missing_module_xyz:app"], "cannot import missing_module_xyz"),
        (["--app", "/a=shop:app", "--handler", "/a=shop:Api"], "two mounts at /a"),
    ],
)
def test_bad_app_is_one_line_exit_2(code: Path, args: list[str], message: str) -> None:
    """A non-callable or unimportable --app, or two mounts at one prefix: one line, exit 2."""
    result = CliRunner().invoke(main, ["run", "--port", "0", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_loaded_mounts_are_handlers(code: Path) -> None:
    """load_handler builds the class with from_config; load_app wraps the callable."""
    config = ServerConfig(root=code, port=0)
    api = load_handler("/api=shop:Api", config)
    wsgi = load_app("/w=shop:app", config)
    assert (api.prefix, type(api.handler).__name__) == ("/api", "Api")
    assert (wsgi.prefix, type(wsgi.handler).__name__) == ("/w", "WSGIHandler")
    with pytest.raises(MountError):
        load_app("/w=shop:not_callable", config)


def test_handler_and_app_mounted_beside_the_files(code: Path, www: Path) -> None:
    """--handler and --app answer under their prefixes; the files are still served elsewhere."""
    args = ["--port", "0", "--root", str(www), "--no-access-log"]
    args += ["--handler", "/api=shop:Api", "--app", "/wsgi=shop:app"]
    with webserver_process(*args, cwd=code) as (_, match):
        port = int(match["port"])
        assert http_get(port, "/api/orders") == (200, b"api /orders\n")
        assert http_get(port, "/wsgi/x") == (200, b"wsgi /wsgi /x\n")
        assert http_get(port, "/hello.txt") == (200, b"hello, world\n")


def test_app_at_root_replaces_the_files(code: Path, www: Path) -> None:
    """--app module:callable (at /) answers every path, files included."""
    args = ["--port", "0", "--root", str(www), "--no-access-log", "--app", "shop:app"]
    with webserver_process(*args, cwd=code) as (_, match):
        assert http_get(int(match["port"]), "/hello.txt") == (200, b"wsgi  /hello.txt\n")


def test_app_with_several_workers(code: Path, www: Path) -> None:
    """A mounted app is loaded once and served by every worker process."""
    args = ["--port", "0", "--root", str(www), "--no-access-log", "--workers", "2"]
    with webserver_process(*args, "--app", "/w=shop:app", cwd=code) as (_, match):
        port = int(match["port"])
        assert [http_get(port, f"/w/{i}") for i in range(4)] == [
            (200, f"wsgi /w /{i}\n".encode()) for i in range(4)
        ]


@pytest.fixture
def plugin(code: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution registering ``hello`` in the webserver.handlers group."""
    site = tmp_path / "site"
    info = site / "demo_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[webserver.handlers]\nhello = demo_hello:Hello\n")
    (site / "demo_hello.py").write_text(
        textwrap.dedent(
            """
            from webserver import Handler, Response

            class Hello(Handler):
                def get(self, request):
                    return Response.text("hello from a plugin\\n")
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    return site


def test_plugins_are_listed(plugin: Path) -> None:
    """`webserver handlers` lists each plugin's name and what it loads."""
    assert "hello" in handler_plugins()
    result = CliRunner().invoke(main, ["handlers"])
    assert result.exit_code == 0
    assert "hello\tdemo_hello:Hello\n" in result.output


def test_plugin_mounted_by_name(plugin: Path, www: Path) -> None:
    """--handler /prefix=NAME mounts an installed plugin."""
    args = ["--port", "0", "--root", str(www), "--no-access-log", "--handler", "/hi=hello"]
    with webserver_process(*args) as (_, match):
        assert http_get(int(match["port"]), "/hi") == (200, b"hello from a plugin\n")


def test_no_plugins_says_so() -> None:
    """Without plugins, `webserver handlers` says none are installed (on stderr) and exits 0."""
    if handler_plugins():
        pytest.skip("handler plugins are installed in this environment")
    result = CliRunner().invoke(main, ["handlers"])
    assert result.exit_code == 0
    assert "no handler plugins installed" in result.output
