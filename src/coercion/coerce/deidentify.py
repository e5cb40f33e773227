"""The ``deidentify:`` URI scheme: the PS3.15 Basic Profile with named options."""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, register_scheme
from coercion.engine.rules import RuleAction
from coercion.errors import ConfigError
from coercion.profile import (
    Change,
    CompiledProfile,
    Deidentifier,
    compile_profile,
    parse_options,
)
from coercion.profile.keys import DEFAULT_KEY_SCOPE, deidentify_scope

__all__ = ["DeidentifyAction"]


class DeidentifyAction:
    """``deidentify:Opt1,Opt2``: the PS3.15 Basic Profile with the named options.

    Tokens, new UIDs and date offsets are derived in the key scope
    ``deidentify/NAME``: NAME is the rule's ``key=`` parameter, else the rule's
    name (the default scope for a rule of the command line).
    """

    def __init__(self, deidentifier: Deidentifier) -> None:
        self.deidentifier = deidentifier

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """De-identify *ds* in place."""
        return self.deidentifier.apply(ds).changes

    def retention(self, ctx: EventContext) -> CompiledProfile:
        """What the output keeps on purpose (for verification): the compiled options."""
        return self.deidentifier.profile


def _deidentify(spec: str, params: Mapping[str, str], env: ActionEnv, rule: str) -> RuleAction:
    unknown = sorted(set(params) - {"key"})
    if unknown:
        raise ValueError(
            f"deidentify: unknown parameter {', '.join(unknown)}; it takes key=NAME (a shared "
            "key scope); name the PS3.15 options in the URI, e.g. deidentify:RetainUIDsOption"
        )
    if "key" in params and not params["key"].strip():
        raise ValueError("deidentify: key= needs a scope name, e.g. key=trial-a")
    scope = deidentify_scope(params.get("key", rule).strip() or DEFAULT_KEY_SCOPE)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    try:
        options = parse_options(names, where="deidentify")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    deidentifier = env.shared(
        ("deidentify", options, scope),
        Deidentifier,
        lambda: Deidentifier(compile_profile(options), env.secret, scope),
    )
    return DeidentifyAction(deidentifier)


register_scheme("deidentify", _deidentify, named=True)
