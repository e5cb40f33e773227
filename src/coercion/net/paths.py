"""Where the node keeps what it receives: paths made only of valid UIDs, inside their folder.

Study, Series and SOP Instance UIDs, and MPPS instance UIDs, come from the
peer. Each becomes a path component only when it is a UID as PS3.5 9.1
defines it (digits and dots: no ``/``, no ``..``, no empty name), and the
resolved path must still lie under the folder it belongs to (a symbolic link
inside the data folder cannot lead out of it).
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from coercion.errors import MalformedDataError
from coercion.profile.uids import is_valid_uid

__all__ = ["inside", "mpps_path", "object_path", "uid_component"]

#: The attributes a stored object's path is made of, with their tags.
_OBJECT_UIDS = (
    ("StudyInstanceUID", "(0020,000D)"),
    ("SeriesInstanceUID", "(0020,000E)"),
    ("SOPInstanceUID", "(0008,0018)"),
)


def uid_component(value: object, what: str, name: str) -> str:
    """*value* as a path component, if it is a valid UID; raise naming *what* otherwise."""
    text = "" if value is None else str(value)
    if not is_valid_uid(text):
        problem = "missing" if not text else "not a valid UID (PS3.5 9.1)"
        raise MalformedDataError(
            f"{name}: {what} is {problem}; refused, nothing stored",
            f"{'missing' if not text else 'invalid'} UID: {what}",
        )
    return text


def inside(folder: Path, path: Path) -> bool:
    """Whether *path*, symbolic links resolved, lies under *folder* (also resolved)."""
    return path.resolve().is_relative_to(folder.resolve())


def _confined(folder: Path, path: Path, name: str) -> Path:
    if not inside(folder, path):
        raise MalformedDataError(
            f"{name}: the storage path leaves {folder}; refused (check for symbolic links)",
            "storage path outside the data folder",
        )
    return path


def object_path(objects: Path, ds: Dataset, name: str) -> Path:
    """``objects/<Study UID>/<Series UID>/<SOP Instance UID>.dcm`` for *ds*."""
    study, series, instance = (
        uid_component(ds.get(keyword), f"{tag} {keyword}", name) for keyword, tag in _OBJECT_UIDS
    )
    return _confined(objects, objects / study / series / f"{instance}.dcm", name)


def mpps_path(folder: Path, instance: str, name: str) -> Path:
    """``folder/<SOP Instance UID>.dcm`` for an MPPS instance."""
    uid = uid_component(instance, "the affected/requested SOP Instance UID", name)
    return _confined(folder, folder / f"{uid}.dcm", name)
