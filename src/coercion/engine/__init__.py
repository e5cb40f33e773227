"""The coercion engine: event contexts, rules, URI schemes and their application."""

from coercion.engine.context import Dimse, EventContext, Role
from coercion.engine.engine import AppliedRule, Engine, Outcome
from coercion.engine.registry import (
    ActionEnv,
    PeerDevice,
    build_action,
    register_scheme,
    schemes,
)
from coercion.engine.rules import (
    Condition,
    ForwardRule,
    OnFailure,
    Rule,
    RuleAction,
    RuleSet,
    parse_condition,
    parse_conditions,
)

__all__ = [
    "ActionEnv",
    "AppliedRule",
    "Condition",
    "Dimse",
    "Engine",
    "EventContext",
    "ForwardRule",
    "OnFailure",
    "Outcome",
    "PeerDevice",
    "Role",
    "Rule",
    "RuleAction",
    "RuleSet",
    "build_action",
    "parse_condition",
    "parse_conditions",
    "register_scheme",
    "schemes",
]
