"""The ``webclient`` command."""

import click


@click.group()
def main() -> None:
    """Fetch and upload files in batches over HTTP/1.x."""
