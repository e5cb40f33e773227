"""``python -m coercion``: the command line."""

from coercion.cli.main import main

main()
