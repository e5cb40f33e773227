"""The URI schemes: a registry from scheme to the factory that makes a rule's action.

A factory gets the scheme-specific part of the URI, the rule's ``key=value``
parameters and the :class:`ActionEnv` (a factory registered with
``named=True`` also the rule's name); it validates them (raising
:class:`ValueError` with a message that says what to fix) and returns a
:class:`~coercion.engine.rules.RuleAction`. Factories run when the rules
load, never per object.
"""

from __future__ import annotations

import difflib
import importlib
import ssl
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

from coercion.defaults import STORE_URL
from coercion.engine.rules import RuleAction
from coercion.engine.scopes import ScopeSettings

__all__ = [
    "ActionEnv",
    "ActionFactory",
    "NamedActionFactory",
    "PeerDevice",
    "build_action",
    "register_fixed_scheme",
    "register_scheme",
    "schemes",
]

_T = TypeVar("_T")


@dataclass(frozen=True)
class PeerDevice:
    """A remote device of the directory as actions see it.

    ``addresses`` gives the host and port of each of its AE titles that has a
    connection, ``tls`` those of its AE titles whose connection uses TLS;
    ``info`` its descriptive attributes by LDAP name (``dicomInstitutionName``,
    ``dicomManufacturer``, ``dicomStationName``...), each as a tuple of values.
    """

    name: str
    addresses: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    info: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tls: frozenset[str] = frozenset()


@dataclass
class ActionEnv:
    """What actions may need beyond their URI: the key, the scopes, a cache shared by all rules.

    ``scopes`` are the pseudonymisation scopes of the directory (settings by
    name); ``scripts`` its tag scripts (parsed, by name: the ``script:`` scheme
    knows their type, the engine only carries them); ``store_url`` is the
    pseudonym store (``store_urls`` per scope, where a scope names its own).
    The loader (:mod:`coercion.directory.config`) sets these before the rules'
    actions are built. ``cache`` holds what the actions open or compile once
    for all rules (:meth:`shared`); :meth:`close` closes what can be closed.
    ``data_directory``, when set, stands for the device's data folder (the
    node's ``--data``): the default store lives there; ``worklist_directory``
    the node's local worklist (default: the data folder's ``worklist``).
    ``peers`` are the directory's other devices by AE title (set when a
    configuration loads, for ``sup-from-dev:`` and ``merge-mwl:``; None in an
    environment that only checks URIs, where device names cannot be checked).
    ``client_tls`` is the node's TLS context for associations with peers whose
    connection uses TLS (its ``--tls-ca``, and its certificate when it has one;
    None: the system's trusted CAs).
    ``store_override``, when set, replaces every store URL of the directory
    (``coercion explain`` uses a throwaway in-memory store, so that a preview
    numbers nothing for real).

    One environment belongs to one loaded configuration: its actions keep a
    reference to it, so it is never changed once those actions serve. A reload
    builds in :meth:`derive` (a fresh one) and the old one is closed after the
    swap.
    """

    secret: bytes
    cache: dict[Hashable, object] = field(default_factory=dict)
    scopes: Mapping[str, ScopeSettings] = field(default_factory=dict)
    store_url: str = STORE_URL
    store_urls: Mapping[str, str] = field(default_factory=dict)
    scripts: Mapping[str, object] = field(default_factory=dict)
    data_directory: str = ""
    store_override: str = ""
    worklist_directory: str = ""
    peers: Mapping[str, PeerDevice] | None = None
    client_tls: ssl.SSLContext | None = None

    def derive(self) -> ActionEnv:
        """A fresh environment with this one's key and settings and nothing loaded or opened."""
        return ActionEnv(
            self.secret,
            store_url=self.store_url,
            data_directory=self.data_directory,
            store_override=self.store_override,
            worklist_directory=self.worklist_directory,
            client_tls=self.client_tls,
        )

    def shared(self, key: Hashable, kind: type[_T], make: Callable[[], _T]) -> _T:
        """The *kind* object cached under *key*, made by *make* on first use."""
        found = self.cache.get(key)
        if not isinstance(found, kind):
            found = self.cache[key] = make()
        return found

    def close(self) -> None:
        """Release what the actions opened (the store's connections)."""
        for value in self.cache.values():
            close = getattr(value, "close", None)
            if callable(close):
                close()


ActionFactory = Callable[[str, Mapping[str, str], ActionEnv], RuleAction]
#: A factory that also gets the rule's name ('' for a rule of the command line).
NamedActionFactory = Callable[[str, Mapping[str, str], ActionEnv, str], RuleAction]
_SCHEMES: dict[str, NamedActionFactory] = {}
#: Schemes whose module (and its dependencies) is imported on first use.
_PLUGINS = {
    "deidentify": "coercion.coerce.deidentify",
    "pseudonymize": "coercion.store.actions",
    "reidentify": "coercion.store.actions",
    "script": "coercion.script.action",
    "merge-attrs": "coercion.coerce.merge",
    "nullify-tag": "coercion.coerce.nullify",
    "nullify-pixel-data": "coercion.coerce.nullify",
    "use-calling-aet-as": "coercion.coerce.calling",
    "change-charset": "coercion.coerce.charset",
    "trim-ISO2022": "coercion.coerce.charset",
    "sup-from-dev": "coercion.coerce.device",
    "merge-mwl": "coercion.coerce.mwl",
    "xslt": "coercion.coerce.xslt",
}
#: dcm4chee-arc schemes that need an archive's own services: why they are not available here.
_NOT_IMPLEMENTED = {
    "leading-arc": (
        "it takes study attributes from a leading archive's C-FIND and its query cache, "
        "a service of dcm4chee-arc"
    ),
    "retrieve-as-received": (
        "it returns objects as the archive stored them on receipt, a service of "
        "dcm4chee-arc's retrieve"
    ),
}


def register_scheme(
    scheme: str, factory: ActionFactory | NamedActionFactory, *, named: bool = False
) -> None:
    """Make *scheme* available to rules' URIs; a *named* factory also gets the rule's name."""
    if named:
        _SCHEMES[scheme] = cast(NamedActionFactory, factory)
        return
    plain = cast(ActionFactory, factory)
    _SCHEMES[scheme] = lambda spec, params, env, _rule: plain(spec, params, env)


def register_fixed_scheme(scheme: str, make: Callable[[], RuleAction]) -> None:
    """Make *scheme* available for an action that takes no argument and no parameter."""

    def factory(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
        if spec.strip() or params:
            raise ValueError(f"{scheme}: takes nothing after the colon and no parameter")
        return make()

    register_scheme(scheme, factory)


def schemes() -> list[str]:
    """The URI schemes rules may use, sorted."""
    return sorted({*_SCHEMES, *_PLUGINS})


def build_action(uri: str, params: Mapping[str, str], env: ActionEnv, rule: str = "") -> RuleAction:
    """Make the action of rule *rule*'s *uri*; raise ValueError naming what is wrong."""
    scheme, sep, rest = uri.partition(":")
    if not sep:
        raise ValueError(f"{uri!r} is not a URI: expected SCHEME:...")
    factory = _SCHEMES.get(scheme)
    if factory is None and scheme in _PLUGINS:
        importlib.import_module(_PLUGINS[scheme])  # registers the scheme
        factory = _SCHEMES.get(scheme)
    if factory is None and scheme in _NOT_IMPLEMENTED:
        raise ValueError(
            f"the dcm4chee-arc scheme {scheme}: is not implemented here: "
            f"{_NOT_IMPLEMENTED[scheme]}; leave the rule disabled (dicomInstalled: FALSE) "
            "or remove it"
        )
    if factory is None:
        close = difflib.get_close_matches(scheme, schemes(), n=1)
        hint = f"; did you mean {close[0]}:?" if close else ""
        raise ValueError(
            f"unknown URI scheme {scheme!r}; known schemes: {', '.join(schemes())}{hint}"
        )
    return factory(rest, params, env, rule)
