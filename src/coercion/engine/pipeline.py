"""One pipeline for every object coercion writes: coerce -> encode -> verify -> write.

The node's storage, the forwarder and the batch read an object (with
:mod:`coercion.dicom.part10`: long values deferred, so pixel data stays on
disk) and hand it here with the step that coerces it:

1. **coerce** (:func:`prepare`): the rules for the event (or a batch's
   options) change the data set; the step says what the de-identification
   keeps on purpose (its :class:`~coercion.profile.verify.Retention`), or None
   when no de-identifying rule applied. With verification on, the source's
   identifying values are collected first;
2. **encode** (:meth:`Prepared.encode`): elements no rule touched are copied
   as the bytes that were read, deferred ones straight from the source file;
3. **verify** (:meth:`Prepared.verify`, on by default): the encoded output is
   searched for the source's identifying values (:mod:`coercion.profile.verify`);
   a leak raises :class:`~coercion.errors.VerificationError` naming the
   attributes, never a value, and nothing is written;
4. **write** (:func:`write`): atomically (:func:`~coercion.dicom.outputs.atomic_output`).

An object nothing changed need not be encoded again (:attr:`Coerced.changed`):
the node stores, and the forwarder sends, the bytes it read as they are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset, FileDataset

from coercion.dicom.elements import python_encodings
from coercion.dicom.outputs import atomic_output
from coercion.dicom.part10 import EncodedFile, encode_file
from coercion.engine.context import EventContext
from coercion.engine.engine import Engine, Outcome
from coercion.errors import VerificationError
from coercion.profile.identifiers import Identifiers, collect_identifiers
from coercion.profile.verify import Retention, find_leaks

__all__ = ["Coerced", "Prepared", "apply_rules", "encodings", "prepare", "retention", "write"]


@dataclass
class Coerced:
    """What the coerce step made of an object."""

    dataset: Dataset
    #: Whether anything applied (else the object may be kept as it was read).
    changed: bool
    #: What its de-identification keeps on purpose; None: no de-identification to verify.
    retention: Retention | None = None
    #: The rules' outcome (None for a batch's options).
    outcome: Outcome | None = None
    #: Changes per action letter.
    counts: dict[str, int] = field(default_factory=dict)
    #: Seconds the rules took to select and apply (0 when none ran).
    seconds: float = 0.0


@dataclass
class Prepared:
    """An object through the coerce step, ready to be encoded (and verified)."""

    coerced: Coerced
    #: The source's identifying values (None: not verified).
    identifiers: Identifiers | None
    name: str
    source: Path | None = None

    @property
    def dataset(self) -> FileDataset:
        """The coerced data set."""
        return cast(FileDataset, self.coerced.dataset)

    def encode(self) -> EncodedFile:
        """The output: elements no rule touched are the bytes that were read, deferred
        values stay references to the source file.
        """
        return encode_file(self.dataset, self.source)

    def verify(self, encoded: EncodedFile) -> None:
        """Raise :class:`VerificationError` when *encoded* holds an identifying value of the
        source its de-identification does not keep on purpose (the message names no value).
        """
        keeps = self.coerced.retention
        if self.identifiers is not None and keeps is not None:
            check(encoded, self.identifiers, keeps, self.dataset, self.name)


def retention(outcome: Outcome, ctx: EventContext) -> Retention | None:
    """What the last de-identifying rule that applied keeps on purpose, or None.

    ``deidentify:``, ``pseudonymize:`` and ``script:`` say so through ``retention()``.
    """
    found = [
        keeps(ctx)
        for a in outcome.applied
        if a.failure is None and callable(keeps := getattr(a.rule.action, "retention", None))
    ]
    return cast(Retention, found[-1]) if found else None


def apply_rules(engine: Engine, ctx: EventContext) -> Callable[[Dataset], Coerced]:
    """The coerce step of *engine*'s rules for *ctx*."""

    def coerce(ds: Dataset) -> Coerced:
        started = time.perf_counter()
        outcome = engine.apply(ds, ctx)
        seconds = time.perf_counter() - started
        return Coerced(
            outcome.dataset,
            bool(outcome.applied),
            retention(outcome, ctx),
            outcome,
            dict(outcome.counts()),
            seconds,
        )

    return coerce


def prepare(
    ds: FileDataset,
    coerce: Callable[[Dataset], Coerced],
    *,
    verify: bool,
    name: str,
    source: Path | None = None,
) -> Prepared:
    """Coerce *ds* (its identifying values collected first when *verify*).

    Then :meth:`Prepared.encode` it, :meth:`Prepared.verify` the encoding and :func:`write` it.

    *name* is what messages call the object (a file or ``C-STORE from CT01``);
    *source* is the file its deferred values are in (default: the file it was read from).
    """
    identifiers = collect_identifiers(ds) if verify else None  # before the rules change it
    return Prepared(coerce(ds), identifiers, name, source)


def check(
    encoded: EncodedFile, identifiers: Identifiers, keeps: Retention, ds: Dataset, name: str
) -> None:
    """Raise :class:`VerificationError` when *encoded* holds one of *identifiers* (no value)."""
    leaks = find_leaks(encoded.scannable(), identifiers, keeps, encodings(ds))
    if leaks:
        raise VerificationError(
            f"{name}: output still holds identifying values of {', '.join(leaks)}; nothing written"
        )


def encodings(ds: Dataset) -> list[str]:
    """The codecs *ds*'s text may be in: its character sets, then the usual ones."""
    charset = ds.get("SpecificCharacterSet")
    codecs = (python_encodings(charset) if charset else None) or []
    return ["ascii", *codecs, "utf-8", "latin-1"]


def write(encoded: EncodedFile, path: Path, *, sync: bool) -> None:
    """Write *encoded* to *path*, whole or not at all (fsynced with *sync*)."""
    with atomic_output(path, sync=sync) as fd:
        encoded.write_to(fd)
