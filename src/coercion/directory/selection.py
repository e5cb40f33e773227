"""Which entries a node reads: its own device's subtree and the devices it references.

A node may share its directory with other products (dcm4chee-arc's default
configuration alone is about 1,500 entries). It reads only:

* its device (the ``dicomDevice`` whose ``dicomDeviceName`` is the node's name)
  and everything under it: network AEs and connections, rules, forward rules,
  tag scripts, pseudonymisation scopes;
* the entries from the device up to the base (``cn=Devices``, ``cn=DICOM
  Configuration``, the suffix), so that an export imports into an empty directory;
* the devices it references (:data:`AE_TITLE_PARAMS`, :data:`DEVICE_PARAMS`): by AE
  title (``coercionDestinationAETitle`` of its forward rules, ``coercionWorklistAETitle``
  of the device, ``mwl-scp=`` of a rule) or by name (``device=`` of a rule), each with
  its network AEs and connections (not what lies below them, such as transfer
  capabilities);
* every device with its network AEs and connections when any may matter: the device
  says ``coercionRestrictCallingAETitles: TRUE`` (any known device may call), a rule's
  scheme reads the calling AE's device (:data:`CALLING_DEVICE_SCHEMES`), or a
  reference is not found (so that the error can suggest the closest).

With no such device, it reads the name of every device, for the error message.
The result is sorted as a tree (parents first, siblings by RDN), whatever the
source, so the embedded directory and a server give the same list.

The searches go through a :class:`Tree`: :class:`MemoryTree` for LDIF files, an
ldap3 connection for a server (``sources``). Every search is filtered here in
Python as well, so both answer alike (a server's filter may match more loosely,
e.g. ``dicomDeviceName`` ignores case; the node's name does not).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from coercion.directory.ldifio import DnKey, Entry, dn_key, parent_dn
from coercion.errors import ConfigError

__all__ = [
    "AE_TITLE_PARAMS",
    "CALLING_DEVICE_SCHEMES",
    "DEVICE_CLASSES",
    "DEVICE_PARAMS",
    "Match",
    "MemoryTree",
    "Scope",
    "Tree",
    "matches",
    "read_node_entries",
    "read_node_entries_after",
]

#: Rule parameters (``coercionParam: KEY=VALUE``) whose value is another device's AE title.
AE_TITLE_PARAMS = ("mwl-scp",)
#: Rule parameters whose value is another device's ``dicomDeviceName``.
DEVICE_PARAMS = ("device",)
#: URI schemes that read the device of the calling AE title (unless ``device=`` names one).
CALLING_DEVICE_SCHEMES = ("sup-from-dev",)

#: An attribute and the values one of which it must hold (exactly).
Match = tuple[str, frozenset[str]]

_DEVICE = "dicomDevice"
_AE = "dicomNetworkAE"
_CONNECTION = "dicomNetworkConnection"
#: The classes of every device's skeleton: the device, its AEs and connections.
DEVICE_CLASSES = (_DEVICE, _AE, _CONNECTION)


class Scope(enum.Enum):
    """How far below the base a search goes (as LDAP's search scopes)."""

    BASE = "base"
    LEVEL = "one"
    SUBTREE = "sub"


class Tree(Protocol):
    """A directory the selection can search."""

    def search(
        self, base: str, scope: Scope, classes: Sequence[str] = (), match: Match | None = None
    ) -> list[Entry]:
        """The entries within *scope* of *base* of one of *classes* (any when empty) that
        satisfy *match*; none when *base* does not exist."""
        ...


def values_of(attrs: dict[str, list[str]], name: str) -> list[str]:
    """The values of attribute *name* (LDAP names ignore case)."""
    folded = name.lower()
    return next((values for key, values in attrs.items() if key.lower() == folded), [])


def matches(attrs: dict[str, list[str]], classes: Sequence[str], match: Match | None) -> bool:
    """True when the entry has one of *classes* (any when empty) and satisfies *match*."""
    if classes:
        held = {value.lower() for value in values_of(attrs, "objectClass")}
        if not held & {name.lower() for name in classes}:
            return False
    return match is None or any(value in match[1] for value in values_of(attrs, match[0]))


class MemoryTree:
    """Entries held in memory (an LDIF folder), searched as a server would."""

    def __init__(self, entries: Iterable[Entry], origin: str) -> None:
        self._entries: dict[DnKey, Entry] = {}
        self._children: dict[DnKey, list[DnKey]] = defaultdict(list)
        for dn, attrs in entries:
            try:
                key = dn_key(dn)
            except ValueError as exc:
                raise ConfigError(f"{origin}: entry {dn}: not a valid DN ({exc})") from None
            if key in self._entries:
                raise ConfigError(f"{origin}: entry {dn} appears twice")
            self._entries[key] = (dn, attrs)
            self._children[key[:-1]].append(key)
        #: The DNs of the entries whose parent is not held (the bases to search).
        self.suffixes = [
            dn for key, (dn, _) in self._entries.items() if key[:-1] not in self._entries
        ]

    def search(
        self, base: str, scope: Scope, classes: Sequence[str] = (), match: Match | None = None
    ) -> list[Entry]:
        key = dn_key(base)
        if key not in self._entries:
            return []
        if scope is Scope.BASE:
            keys: Iterable[DnKey] = [key]
        elif scope is Scope.LEVEL:
            keys = self._children[key]
        else:
            keys = self._below(key)
        found = (self._entries[k] for k in keys)
        return [(dn, attrs) for dn, attrs in found if matches(attrs, classes, match)]

    def _below(self, key: DnKey) -> Iterator[DnKey]:
        yield key
        for child in self._children[key]:
            yield from self._below(child)


def read_node_entries(tree: Tree, bases: Sequence[str], device: str) -> list[Entry]:
    """The entries node *device* reads from *tree* under *bases* (see the module's docstring).

    Raises ConfigError when two devices have the name *device*.
    """
    mine = [e for b in bases for e in tree.search(b, Scope.SUBTREE, *_named(frozenset([device])))]
    if not mine:
        return _sorted(e for base in bases for e in tree.search(base, Scope.SUBTREE, (_DEVICE,)))
    if len(mine) > 1:
        where = "; ".join(dn for dn, _ in mine)
        raise ConfigError(f"{where}: two devices named {device!r}; give each its own name")
    device_dn = mine[0][0]
    base = next(b for b in bases if dn_key(device_dn)[: len(dn_key(b))] == dn_key(b))
    selected = {dn_key(dn): (dn, attrs) for dn, attrs in tree.search(device_dn, Scope.SUBTREE)}
    for dn, attrs in _ancestors(tree, device_dn, base):
        selected[dn_key(dn)] = (dn, attrs)
    own = selected[dn_key(device_dn)][1]
    titles, names, every = _references(selected.values(), own)
    if every or not _read_referenced(tree, base, titles, names, selected):
        skeleton = (_DEVICE, _AE, _CONNECTION)
        for entry in tree.search(base, Scope.SUBTREE, skeleton):
            selected.setdefault(dn_key(entry[0]), entry)
    return _sorted(selected.values())


def _read_referenced(
    tree: Tree,
    base: str,
    titles: frozenset[str],
    names: frozenset[str],
    selected: dict[DnKey, Entry],
) -> bool:
    """Add the devices of AE *titles* and of *names* to *selected*; False if one is not found."""
    aes = tree.search(base, Scope.SUBTREE, (_AE,), ("dicomAETitle", titles)) if titles else []
    named = tree.search(base, Scope.SUBTREE, *_named(names)) if names else []
    for dn in {parent_dn(dn) for dn, _ in aes} | {dn for dn, _ in named}:
        for entry in _device(tree, dn):
            selected.setdefault(dn_key(entry[0]), entry)
    found_titles = {t for _, attrs in aes for t in values_of(attrs, "dicomAETitle")}
    found_names = {n for _, attrs in named for n in values_of(attrs, "dicomDeviceName")}
    return titles <= found_titles and names <= found_names


def _ancestors(tree: Tree, dn: str, base: str) -> list[Entry]:
    """The entries above *dn* up to *base* (inclusive)."""
    found: list[Entry] = []
    stop = dn_key(base)
    while len(dn_key(dn)) > len(stop):
        dn = parent_dn(dn)
        found.extend(tree.search(dn, Scope.BASE))
    return found


def _references(
    entries: Iterable[Entry], device: dict[str, list[str]]
) -> tuple[frozenset[str], frozenset[str], bool]:
    """The AE titles and device names the node's entries reference, and whether every
    device may matter (restricted calling AE titles, a rule reading the calling device)."""
    titles = set(values_of(device, "coercionWorklistAETitle"))
    names: set[str] = set()
    every = values_of(device, "coercionRestrictCallingAETitles") == ["TRUE"]
    for _dn, attrs in entries:
        if matches(attrs, ("coercionForwardRule",), None):
            titles.update(values_of(attrs, "coercionDestinationAETitle"))
        if not matches(attrs, ("coercionRule",), None):
            continue
        params = dict(item.partition("=")[::2] for item in values_of(attrs, "coercionParam"))
        titles.update(params[key] for key in AE_TITLE_PARAMS if params.get(key))
        names.update(params[key] for key in DEVICE_PARAMS if params.get(key))
        scheme = next(iter(values_of(attrs, "coercionURI")), "").partition(":")[0]
        every |= scheme in CALLING_DEVICE_SCHEMES and not any(k in params for k in DEVICE_PARAMS)
    return frozenset(titles), frozenset(names), every


def _named(names: frozenset[str]) -> tuple[tuple[str, ...], Match]:
    """The classes and the match of a search for the devices named *names*."""
    return (_DEVICE,), ("dicomDeviceName", names)


def _device(tree: Tree, dn: str) -> list[Entry]:
    """A device with its network AEs and connections (none when *dn* is not a device)."""
    entry = tree.search(dn, Scope.BASE, (_DEVICE,))
    return [*entry, *tree.search(dn, Scope.LEVEL, (_AE, _CONNECTION))] if entry else []


def _sorted(entries: Iterable[Entry]) -> list[Entry]:
    """*entries* as a tree: parents first, siblings in the order of their RDNs."""
    return sorted(entries, key=lambda entry: dn_key(entry[0]))


def read_node_entries_after(
    known: Iterable[Entry],
    devices: Iterable[Entry],
    changed: Iterable[Entry],
    removed: Iterable[str],
    device: str,
    origin: str,
) -> list[Entry]:
    """The entries node *device* would read once *changed* are written and *removed* deleted.

    *known* are the entries it reads now, *devices* every device's skeleton
    (:data:`DEVICE_CLASSES`), so that a change naming a device the node does not
    reference yet (a new forwarding destination, say) finds it, as after a reload.
    """
    held: dict[DnKey, Entry] = {}
    for dn, attrs in [*devices, *known]:
        held[dn_key(dn)] = (dn, attrs)
    try:
        for dn in removed:
            held.pop(dn_key(dn), None)
        for dn, attrs in changed:
            held[dn_key(dn)] = (dn, attrs)
    except ValueError as exc:
        raise ConfigError(f"{origin}: entry {dn}: not a valid DN ({exc})") from None
    tree = MemoryTree(held.values(), origin)
    return read_node_entries(tree, tree.suffixes, device)
