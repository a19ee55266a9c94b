"""Click's usage errors (a bad option value, a missing argument, an unknown option or command)
as one line, as each program prints its own errors, instead of click's usage block and hint.

Both command lines mix :class:`OneLineUsage` into their click classes and name, in
``one_line_error``, the exception that prints their one line with status 2.
"""

from __future__ import annotations

from typing import Any

import click


class OneLineUsage:
    """Mixin for ``click.Command`` and ``click.Group`` (listed before them)."""

    #: Raised with click's message in place of its ``UsageError``.
    one_line_error: type[click.ClickException]

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)  # type: ignore[misc,no-any-return]
        except click.UsageError as exc:
            raise self.one_line_error(exc.format_message()) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """A group's unknown command (only groups call this)."""
        try:
            return super().resolve_command(ctx, args)  # type: ignore[misc,no-any-return]
        except click.UsageError as exc:
            raise self.one_line_error(exc.format_message()) from None
