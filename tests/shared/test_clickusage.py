"""Tests of webclient/_shared/clickusage.py: click's usage errors as one line."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from webclient._shared.clickusage import OneLineUsage


class _Problem(click.ClickException):
    exit_code = 2


class _Command(OneLineUsage, click.Command):
    one_line_error = _Problem


class _Group(OneLineUsage, click.Group):
    one_line_error = _Problem
    command_class = _Command


@click.group(cls=_Group)
def _tool() -> None:
    pass


@_tool.command("greet")
@click.option("--count", type=int, default=1)
@click.argument("name")
def _greet(count: int, name: str) -> None:
    click.echo(f"hello {name} x{count}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["greet", "--count", "x", "a"], "Invalid value for '--count'"),
        (["greet", "--bogus", "a"], "No such option"),
        (["greet"], "Missing argument 'NAME'"),
        (["nope"], "No such command 'nope'"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(args: list[str], message: str) -> None:
    """Each kind of usage error is the program's one error line, no usage block, status 2."""
    result = CliRunner().invoke(_tool, args)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and message in line


def test_a_good_command_line_runs() -> None:
    """The mixin changes nothing for a valid command line."""
    result = CliRunner().invoke(_tool, ["greet", "--count", "2", "a"])
    assert (result.exit_code, result.output) == (0, "hello a x2\n")
