"""``python -m webclient`` is the ``webclient`` command."""

from .cli import main

main()
