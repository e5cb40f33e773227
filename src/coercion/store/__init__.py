"""The pseudonym store: per-scope pseudonyms, UID maps, date offsets and sealed originals."""

from coercion.store.crypto import ScopeKeys
from coercion.store.store import Patient, PseudonymStore, Scope, ScopeSettings

__all__ = ["Patient", "PseudonymStore", "Scope", "ScopeKeys", "ScopeSettings"]
