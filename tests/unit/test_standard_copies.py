"""standard/ps3.15: the in-repository copies of the PS3.15 tables are the published ones.

Every copy is checked against its published hash on every run; when the shared
folder ``../shared/ps3.15`` exists beside the checkout, the copies must also be
byte for byte the files there, and the generator must make the same module of
either folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from coercion.profile._table import OPTION_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
STANDARD = ROOT / "standard" / "ps3.15"
SHARED = ROOT.parent / "shared" / "ps3.15"

#: Per copied file: the hash it must have (standard/ps3.15/README.md says where each comes from).
PUBLISHED = {
    # pymedphys e1_1.json (2026d) content_sha256
    "confidentiality-profile.json": (
        "e257bc5e1cfecb3156ad3b871c43e6d73581cba6e80df460f4a4a87694e89442"
    ),
    # pymedphys e3_10_1.json (2026d) content_sha256
    "safe-private-attributes.json": (
        "7acb26dbab0e3124c02d075cbf8c5510354a20ded9f89ee4765976a905d92f63"
    ),
    # sha256 of the file as the shared folder holds it
    "dicom-ldap-schema.schema": "bdbd7aaac3d0774617c0ea08068fe896ff5734eadae957bb3ba955bf52fc218b",
}
OPTION_FIELDS = [column[0] for column in OPTION_COLUMNS]  # the JSON field of each option
#: pymedphys's names for the two date columns; the other eight are spelled alike.
PYMEDPHYS_FIELD = {
    "retain_long_full_dates": "retain_longitudinal_full_dates",
    "retain_long_modified_dates": "retain_longitudinal_modified_dates",
}


def _canonical(rows: list[dict[str, Any]]) -> str:
    text = json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def published_form_hash(path: Path) -> str:
    """The hash of *path* in the form its PUBLISHED value was computed over."""
    if path.suffix != ".json":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    rows = json.loads(path.read_text(encoding="utf-8"))
    if path.name == "safe-private-attributes.json":
        keys = ("tag", "private_creator", "vr", "vm", "meaning")
        return _canonical([{key: row[key] for key in keys} for row in rows])
    return _canonical(
        [
            {
                "name": row["name"],
                "tag": row["tag"],
                "retired": row["retired"],
                "in_standard_iod": row["in_std_comp_iod"],
                "basic_profile": row["basic"],
                "options": {PYMEDPHYS_FIELD.get(f, f): row[f] for f in OPTION_FIELDS if row[f]},
            }
            for row in rows
        ]
    )


def load_generator() -> ModuleType:
    """tools/generate_profile.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "generate_profile", ROOT / "tools" / "generate_profile.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_copy_is_the_published_table(name: str) -> None:
    """Each copy has its published hash and, when the shared folder exists, is its file."""
    copy = STANDARD / name
    assert published_form_hash(copy) == PUBLISHED[name]
    shared = SHARED / name
    if shared.exists():
        assert copy.read_bytes() == shared.read_bytes(), f"copy {name} again from {SHARED}"


def test_a_changed_row_changes_the_hash(tmp_path: Path) -> None:
    """The hash check notices a single changed action cell."""
    rows = json.loads((STANDARD / "confidentiality-profile.json").read_text(encoding="utf-8"))
    rows[0]["basic"] = "X"
    changed = tmp_path / "confidentiality-profile.json"
    changed.write_text(json.dumps(rows), encoding="utf-8")
    assert published_form_hash(changed) != PUBLISHED["confidentiality-profile.json"]


def test_generator_reads_the_copies() -> None:
    """The generator's default source is the copy; the shared folder, if any, gives the same."""
    generator = load_generator()
    assert generator.DEFAULT_SOURCE == STANDARD
    text = generator.render(STANDARD)
    assert text == generator.OUTPUT.read_text(encoding="utf-8")
    if (SHARED / "README.md").exists():
        assert generator.render(SHARED) == text
