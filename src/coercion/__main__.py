"""``python -m coercion``: the command line."""

from coercion.cli import main

main()
