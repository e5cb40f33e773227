"""Rule selection and application: the matrix of DIMSE, role, AE, conditions, priority,
sufficient and on-failure, with errors that name the DN and attribute."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from coercion.engine import (
    ActionEnv,
    Dimse,
    Engine,
    EventContext,
    OnFailure,
    Role,
    Rule,
    RuleSet,
    build_action,
    parse_condition,
)
from coercion.errors import CoercionError, RuleFailedError
from coercion.profile import Action, Change
from coercion.script.language import parse_script
from coercion.store import ScopeSettings
from tests.helpers import SECRET, make_dataset

STORE_SCP = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "RESEARCH", "10.0.0.5", "10.0.0.1")


class Mark:
    """A test action that sets ImageComments to its name (or fails) and reports one change."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        ds.ImageComments = (str(ds.get("ImageComments", "")) + "+" + self.name).lstrip("+")
        if self.fail:
            raise CoercionError(f"{self.name} failed on purpose")
        return [Change((), 0x00204000, Action.D)]


def rule(name: str, **fields: object) -> Rule:
    values: dict[str, object] = {
        "name": name,
        "dn": f"cn={name},dicomDeviceName=coercion",
        "uri": "test:",
        "action": Mark(name, bool(fields.pop("fail", False))),
        "dimse": frozenset({Dimse.C_STORE_RQ}),
        "role": Role.SCP,
    }
    values.update(fields)
    return Rule(**values)  # type: ignore[arg-type]


def applied(rules: list[Rule], ctx: EventContext = STORE_SCP, ds: Dataset | None = None) -> str:
    outcome = Engine(RuleSet(rules)).apply(ds or make_dataset(), ctx)
    return str(outcome.dataset.get("ImageComments", ""))


# -- selection -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dimse", "role", "expected"),
    [
        (Dimse.C_STORE_RQ, Role.SCP, "a"),
        (Dimse.C_STORE_RQ, Role.SCU, ""),
        (Dimse.C_FIND_RQ, Role.SCP, ""),
        (Dimse.C_FIND_RSP, Role.SCP, ""),
        (Dimse.N_CREATE_RQ, Role.SCP, ""),
    ],
)
def test_dimse_and_role_select(dimse: Dimse, role: Role, expected: str) -> None:
    ctx = EventContext(dimse, role, "CT01", "RESEARCH")
    assert applied([rule("a")], ctx) == expected


def test_rule_under_a_network_ae_applies_to_that_ae_title_only() -> None:
    rules = [rule("ae", ae_title="RESEARCH"), rule("other", ae_title="COERCION")]
    assert applied(rules) == "ae"
    # As SCU the node's AE title is the calling one.
    scu = EventContext(Dimse.C_STORE_RQ, Role.SCU, "COERCION", "PACS")
    assert applied([rule("scu", role=Role.SCU, ae_title="COERCION")], scu) == "scu"


def test_sop_classes_restrict_a_rule() -> None:
    ct = EventContext(
        Dimse.C_STORE_RQ, Role.SCP, "CT01", "X", sop_class_uid="1.2.840.10008.5.1.4.1.1.2"
    )
    mr_only = rule("mr", sop_classes=frozenset({"1.2.840.10008.5.1.4.1.1.4"}))
    ct_only = rule("ct", sop_classes=frozenset({"1.2.840.10008.5.1.4.1.1.2"}))
    assert applied([mr_only, ct_only], ct) == "ct"


@pytest.mark.parametrize(
    ("condition", "holds"),
    [
        ("SendingApplicationEntityTitle=CT.*", True),
        ("SendingApplicationEntityTitle=CT", False),  # the whole value must match
        ("SendingApplicationEntityTitle!=MR.*", True),
        ("ReceivingApplicationEntityTitle=RESEARCH", True),
        ("SendingHostname=10\\.0\\.0\\.5", True),
        ("ReceivingHostname=10\\.0\\.0\\.1", True),
        ("Modality=CT|MR", True),
        ("Modality=MR", False),
        ("(0008,0060)!=SR", True),
        ("(0008,0060)=CT", True),
        ("0008,0060=CT", True),
        ("PatientComments=.+", False),  # absent: the empty value
        ("PatientComments!=.+", True),
    ],
)
def test_conditions(condition: str, holds: bool) -> None:
    assert applied([rule("c", conditions=(parse_condition(condition),))]) == ("c" if holds else "")


def test_all_conditions_must_hold() -> None:
    both = (parse_condition("Modality=CT"), parse_condition("SendingApplicationEntityTitle=MR.*"))
    assert applied([rule("c", conditions=both)]) == ""


def test_multi_valued_attribute_matches_any_value() -> None:
    ds = make_dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert applied([rule("c", conditions=(parse_condition("ImageType=AXIAL"),))], ds=ds) == "c"


def test_conditions_see_the_dataset_as_it_arrived() -> None:
    # The first rule changes ImageComments; the second's condition is on the original value.
    first = rule("a", priority=2)
    second = rule("b", priority=1, conditions=(parse_condition("ImageComments!=.+"),))
    assert applied([first, second]) == "a+b"


# -- order, sufficient, on-failure ------------------------------------------------------


def test_priority_then_ae_level_before_device_level() -> None:
    rules = [
        rule("low", priority=1),
        rule("device", priority=5),
        rule("ae", priority=5, ae_title="RESEARCH"),
        rule("high", priority=9),
    ]
    assert applied(rules) == "high+ae+device+low"


def test_sufficient_stops_after_it_applied() -> None:
    rules = [rule("a", priority=3), rule("b", priority=2, sufficient=True), rule("c", priority=1)]
    assert applied(rules) == "a+b"


def test_sufficient_that_does_not_match_does_not_stop() -> None:
    no = rule("b", priority=2, sufficient=True, conditions=(parse_condition("Modality=MR"),))
    assert applied([no, rule("c", priority=1)]) == "c"


def test_rethrow_fails_the_operation_naming_the_rule() -> None:
    with pytest.raises(RuleFailedError, match=r"rule cn=bad,dicomDeviceName=coercion: bad failed"):
        applied([rule("ok", priority=2), rule("bad", priority=1, fail=True)])


def test_continue_goes_on_without_the_failed_rule() -> None:
    rules = [
        rule("a", priority=3),
        rule("bad", priority=2, fail=True, on_failure=OnFailure.CONTINUE),
        rule("c", priority=1),
    ]
    engine = Engine(RuleSet(rules))
    outcome = engine.apply(make_dataset(), STORE_SCP)
    assert outcome.dataset.ImageComments == "a+c"  # nothing of the failed rule is left
    assert [a.failure is not None for a in outcome.applied] == [False, True, False]
    assert outcome.counts() == {"D": 2}


def test_sufficient_on_failure_stops_quietly_keeping_earlier_changes() -> None:
    rules = [
        rule("a", priority=3),
        rule("bad", priority=2, fail=True, on_failure=OnFailure.SUFFICIENT),
        rule("c", priority=1),
    ]
    assert applied(rules) == "a"


def test_swapped_rules_apply_to_the_next_object() -> None:
    engine = Engine(RuleSet([rule("old")]))
    assert engine.apply(make_dataset(), STORE_SCP).dataset.ImageComments == "old"
    engine.replace_rules(RuleSet([rule("new")]))
    assert engine.apply(make_dataset(), STORE_SCP).dataset.ImageComments == "new"


# -- URIs and conditions are checked when rules load -----------------------------------


def test_deidentify_uri_builds_an_action_that_deidentifies() -> None:
    action = build_action("deidentify:RetainUIDsOption", {}, ActionEnv(SECRET))
    ds = make_dataset()
    changes = action.apply(ds, STORE_SCP)
    assert ds.PatientName != "DOE^JANE^Q"
    assert ds.SOPInstanceUID == "1.2.826.0.1.3680043.99.1.1.1"  # retained
    assert any(c.tag == 0x00100010 for c in changes)


def test_deidentify_rules_derive_in_their_own_or_a_shared_key_scope() -> None:
    """Two rule names give other tokens and UIDs; one key= gives the same; one env caches both."""
    env = ActionEnv(SECRET)

    def output(rule: str, **params: str) -> Dataset:
        ds = make_dataset()
        build_action("deidentify:", params, env, rule).apply(ds, STORE_SCP)
        return ds

    alpha, beta = output("alpha"), output("beta")
    shared_a, shared_b = output("alpha", key="shared"), output("beta", key="shared")
    assert alpha.PatientID != beta.PatientID and alpha.SOPInstanceUID != beta.SOPInstanceUID
    assert shared_a == shared_b and shared_a.PatientID != alpha.PatientID
    assert output("alpha") == alpha  # repeatable
    assert output("", key="default") == output("")  # a command-line rule: the default scope


@pytest.mark.parametrize(
    ("uri", "params", "message"),
    [
        ("deidentfy:", {}, r"unknown URI scheme 'deidentfy'.*did you mean deidentify:"),
        ("deidentify:RetainUIDOption", {}, r"unknown option 'RetainUIDOption'.*RetainUIDsOption"),
        ("deidentify:", {"x": "1"}, r"unknown parameter x; it takes key=NAME"),
        ("deidentify:", {"key": " "}, r"key= needs a scope name"),
        ("no-colon", {}, r"not a URI"),
    ],
)
def test_bad_uris_are_refused_with_a_hint(uri: str, params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_action(uri, params, ActionEnv(SECRET))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Modalty=CT", r"unknown condition name 'Modalty'.*did you mean Modality"),
        ("Modality=CT(", r"invalid regular expression"),
        ("Modality", r"expected NAME=REGEX"),
    ],
)
def test_bad_conditions_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_condition(text)


def test_a_derived_environment_shares_the_key_and_settings_but_nothing_loaded() -> None:
    """ActionEnv.derive: same secret and store settings; its own scopes, scripts and cache."""
    env = ActionEnv(
        SECRET,
        data_directory="/data",
        store_override="sqlite:///:memory:",
        scopes={"trial": ScopeSettings()},
        scripts={"s": parse_script("s", {"general": {}})},
    )
    build_action("deidentify:RetainUIDsOption", {}, env)
    fresh = env.derive()
    assert (fresh.secret, fresh.data_directory, fresh.store_override) == (
        SECRET,
        "/data",
        "sqlite:///:memory:",
    )
    assert fresh.scopes == {} and fresh.scripts == {} and fresh.cache == {}
    assert env.cache  # the original keeps what it made


def test_shared_objects_are_made_once_per_key_and_kind() -> None:
    """ActionEnv.shared: one object per key; a cached object of another kind is replaced."""
    env = ActionEnv(SECRET)
    made: list[str] = []

    def make() -> str:
        made.append("x")
        return f"made {len(made)}"

    assert env.shared("k", str, make) == env.shared("k", str, make) == "made 1"
    env.cache["other"] = 7
    assert env.shared("other", str, make) == "made 2"
    assert made == ["x", "x"]
