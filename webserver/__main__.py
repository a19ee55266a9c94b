"""``python -m webserver`` is the ``webserver`` command."""

from .cli import main

main()
