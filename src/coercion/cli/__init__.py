"""The ``coercion`` command: one module per command group, shared options in :mod:`.config`."""

from coercion.cli.main import main

__all__ = ["main"]
