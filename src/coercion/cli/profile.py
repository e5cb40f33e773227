"""``coercion profile show``: the conformance statement for an option set, row by row."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from coercion.cli.config import format_option
from coercion.profile import BASIC_PROFILE, EDITION, Option, parse_options
from coercion.profile.conformance import conformance_rows, option_header

__all__ = ["profile"]

#: Piped output is never wrapped or cut: every row stays one full line.
_PIPE_WIDTH = 10_000


def _console() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=_PIPE_WIDTH)
    return console


@click.group()
def profile() -> None:
    """The PS3.15 Attribute Confidentiality Profile as coercion applies it."""


@profile.command()
@click.option(
    "--option",
    "option_names",
    multiple=True,
    metavar="NAME",
    help=(
        f"A PS3.15 option (Table E.1-1, edition {EDITION}); repeat for several. One of: "
        + ", ".join(option.name for option in Option)
    ),
)
@format_option
def show(option_names: tuple[str, ...], output_format: str) -> None:
    """Every Table E.1-1 row: the standard's action for the options and the action taken.

    Per row: the tag, keyword and name, the dictionary VR, the column of the table
    whose cell applies (Basic or an option), that cell as the standard prints it,
    the one action coercion takes (compound codes resolved) and a note on how.
    """
    options = parse_options(option_names, where="--option")
    ordered = sorted(options, key=lambda option: option.value)
    rows = conformance_rows(options)
    out = _console()
    if output_format == "json":
        document = {
            "edition": EDITION,
            "profile": {"code": BASIC_PROFILE.value, "meaning": BASIC_PROFILE.meaning},
            "options": [
                {"name": o.name, "code": o.code.value, "column": option_header(o)} for o in ordered
            ],
            "rows": [asdict(row) for row in rows],
        }
        click.echo(json.dumps(document, indent=1, ensure_ascii=False))
        return
    chosen = ", ".join(f"{o.name} ({o.code.value})" for o in ordered) or "no options"
    table = Table(
        title=f"PS3.15 {EDITION} Table E.1-1: Basic Profile ({BASIC_PROFILE.value}) + {chosen}"
    )
    for header in ("tag", "keyword / name", "VR", "column", "standard", "action", "note"):
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(
            row.tag,
            escape(row.keyword or row.name),
            row.vr,
            row.column,
            row.standard,
            row.action,
            escape(row.note),
        )
    out.print(table)
