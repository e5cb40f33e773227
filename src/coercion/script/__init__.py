"""Per-project tag scripts: the ``script:NAME`` scheme (mercure-anonymizer's format)."""

from coercion.script.language import (
    Assignment,
    Command,
    Kind,
    Options,
    Preset,
    Script,
    parse_script,
)

__all__ = ["Assignment", "Command", "Kind", "Options", "Preset", "Script", "parse_script"]
