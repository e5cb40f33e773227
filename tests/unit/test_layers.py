"""Imports between the packages of coercion point one way: a layer imports only layers below it.

dicom <- profile <- engine <- store/script/directory/coerce <- net/batch <- cli; the
top-level modules errors, defaults, cache and resources may be imported from anywhere.
Every import counts, including those made inside functions or for the type checker.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "coercion"

#: The layer of each part; a part imports parts of a lower layer or its own package.
LAYERS = {
    "dicom": 1,
    "profile": 2,
    "engine": 3,
    # the package's face: the errors and the profile's names; the command line reads its version
    "__init__": 3,
    "store": 4,
    "script": 4,
    "directory": 4,
    "coerce": 4,
    "locations": 4,  # where a batch reads and writes
    "net": 5,
    "batch": 5,
    "cluster": 6,  # batches on a cluster
    "console": 6,  # the web console over the node and the directory
    "cli": 7,
    "__main__": 8,
}
#: Usable from anywhere: they import nothing of the layers above.
NEUTRAL = {"errors", "defaults", "cache", "resources"}
#: Imports between parts of one layer, each with the reason it is there.
SIDEWAYS = {
    # the script: scheme pseudonymizes through the store's actions (one store per URL)
    ("script", "store"),
    # the loader parses the directory's tag scripts
    ("directory", "script"),
}
#: Imports of a higher layer by one file, each with the reason it is there.
UPWARD = {
    # merge-mwl: reads the node's local worklist and asks a worklist SCP, both in net/; it is
    # imported on first use of the scheme (never by net/), so no cycle forms
    ("coerce/mwl.py", "net"),
}


def _part(name: str) -> str | None:
    """The part of ``coercion.X...`` (X), or None when *name* is not coercion's."""
    pieces = name.split(".")
    return pieces[1] if pieces[0] == "coercion" and len(pieces) > 1 else None


def _imports() -> Iterator[tuple[str, str, str]]:
    """(file, importing part, imported part) for every import of a coercion module."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "coercion":
                    parts = LAYERS.keys() | NEUTRAL
                    names = [
                        f"coercion.{a.name if a.name in parts else '__init__'}" for a in node.names
                    ]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                part = _part(name)
                if part is not None and part != own:
                    yield str(relative), own, part


def test_every_part_has_a_layer() -> None:
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.name != "py.typed"}
    assert parts - {"__pycache__"} - set(LAYERS) - NEUTRAL == set()
    assert {"dicom", "profile", "engine", "net", "cli"} <= parts


def _allowed(own: str, part: str, file: str = "") -> bool:
    if part in NEUTRAL:
        return True
    if own in NEUTRAL:
        return False
    if LAYERS[part] == LAYERS[own]:
        return (own, part) in SIDEWAYS
    return LAYERS[part] < LAYERS[own] or (file, part) in UPWARD


def test_imports_point_down() -> None:
    wrong = sorted(
        f"{file}: {own} imports {part}"
        for file, own, part in _imports()
        if not _allowed(own, part, file)
    )
    assert wrong == []


def test_the_check_sees_imports() -> None:
    found = {(own, part) for _file, own, part in _imports()}
    assert {("engine", "dicom"), ("cli", "engine"), ("cli", "__init__")} <= found
    assert not _allowed("engine", "store")
    assert not _allowed("errors", "dicom")
    assert not _allowed("store", "directory")
