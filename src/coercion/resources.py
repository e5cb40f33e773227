"""Where the files shipped beside the code are: the LDIF folder and the JSON Schemas.

In a source checkout (and an editable install) they are the repository's
``ldif/`` and ``schema/`` folders; a built wheel carries them inside the
package as ``coercion/ldif`` and ``coercion/schema``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["default_ldif_dir", "schema_dir"]

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parents[1] / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ folder is missing from the installation ({_PACKAGE})")


def default_ldif_dir() -> Path:
    """The folder of the default configuration: schema and data LDIF files."""
    return _find("ldif")


def schema_dir() -> Path:
    """The folder of the JSON Schemas that every directory entry is validated against."""
    return _find("schema")
