"""The tag-script language: commands, templates, rewrites, options, presets, selection."""

from __future__ import annotations

import json

import pytest

from coercion.errors import ConfigError
from coercion.script.language import (
    GENERAL,
    REQUIRED,
    Counter,
    Kind,
    Macro,
    Mode,
    Preset,
    parse_command,
    parse_rewrite,
    parse_script,
    parse_template,
    project_key,
)
from coercion.script.runner import fake_name, truncate_date

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
STUDY_DESCRIPTION = 0x00081030
STUDY_DATE = 0x00080020
ROWS = 0x00280010


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("keep", Kind.KEEP),
        ("safe", Kind.SAFE),
        ("remove", Kind.REMOVE),
        ("clear", Kind.CLEAR),
        (" Remove ", Kind.REMOVE),
        ("set(X)", Kind.SET),
        ("s/a/b/", Kind.REWRITE),
        ("ANO-__COUNTER-001__", Kind.SET),
    ],
)
def test_every_command_parses_to_its_kind(text: str, kind: Kind) -> None:
    """Each command of the language is recognised, in any case and with spaces around it."""
    assert parse_command(text, PATIENT_ID).kind is kind


def test_truncdate_only_on_dates() -> None:
    """truncdate is accepted for a DA attribute and refused for a text one at load."""
    assert parse_command("truncdate", STUDY_DATE).kind is Kind.TRUNCDATE
    with pytest.raises(ValueError, match="DA or DT"):
        parse_command("truncdate", PATIENT_ID)


def test_unknown_command_is_named() -> None:
    """An unknown command fails with the list of commands."""
    with pytest.raises(ValueError, match=r"unknown command 'hash'.*keep, safe"):
        parse_command("hash(1)", PATIENT_ID)


def test_template_splits_literals_macros_and_counter() -> None:
    """A set value is literal text, macros (with a tag argument) and one counter."""
    template = parse_template("X-@project_prefix@-@value(0010,0020)@-__COUNTER-0010__")
    assert template.parts == (
        "X-",
        Macro("project_prefix"),
        "-",
        Macro("value", PATIENT_ID),
        "-",
        Counter(4, 10),
    )
    assert template.literal is None
    assert parse_template("plain text").literal == "plain text"


def test_unknown_macro_gets_a_hint() -> None:
    """A misspelt macro is refused with a did-you-mean."""
    with pytest.raises(ValueError, match=r"@fake_nam@.*did you mean @fake_name@"):
        parse_template("@fake_nam@")


def test_counter_digits_give_width_and_step() -> None:
    """001 counts 001, 002, 003; 0010 counts 0010, 0020, 0030; step 0 is refused."""
    one = parse_template("__COUNTER-001__").counter
    ten = parse_template("__COUNTER-0010__").counter
    assert one is not None and ten is not None
    assert [one.format(n) for n in (1, 2, 3)] == ["001", "002", "003"]
    assert [ten.format(n) for n in (1, 2, 3)] == ["0010", "0020", "0030"]
    assert one.format(1000) == "1000"
    with pytest.raises(ValueError, match="steps of 0"):
        parse_template("__COUNTER-000__")
    with pytest.raises(ValueError, match="one counter"):
        parse_template("__COUNTER-1__-__COUNTER-1__")


@pytest.mark.parametrize(
    ("command", "text", "expected"),
    [
        (r"s/(\w{3}).*/$1??/", "Thorax routine", "Tho??"),
        (r"s/(\w{3}).*/${1}??/", "Thorax", "Tho??"),
        (r"s/(\w{3}).*/\1??/", "Thorax", "Tho??"),
        (r"s/x/y/", "no match here", "no match here"),
        (r"s/o/0/", "foo boo", "f0o boo"),
        (r"s/o/0/g", "foo boo", "f00 b00"),
        (r"s/FOO/bar/i", "a foo", "a bar"),
        (r"s/(a)?b/[$1]/g", "ab b", "[a] []"),
        (r"s#/#-#g", "a/b/c", "a-b-c"),
        (r"s/\//|/g", "a/b", "a|b"),
        (r"s/\d+/<$&>/", "id 42", "id <42>"),
        (r"s/x/\$/", "x", "$"),
    ],
)
def test_perl_substitutions(command: str, text: str, expected: str) -> None:
    """Perl substitutions: groups in every spelling, no match, g and i, another delimiter."""
    assert parse_rewrite(command).apply(text) == expected


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("s/(unclosed/x/", "invalid pattern"),
        ("s/a/b", "pattern.*replacement.*flags"),
        ("s/a/b/q", "unknown substitution flag 'q'"),
        ("s/(a)/$2/", "group 2; the pattern has 1"),
        ("s/a/b/c/d", "pattern.*replacement.*flags"),
        ("s/[z-a]/b/", "invalid pattern"),
    ],
)
def test_invalid_substitutions_are_refused(command: str, message: str) -> None:
    """A substitution that cannot work is refused when the script loads."""
    with pytest.raises(ValueError, match=message):
        parse_command(command, STUDY_DESCRIPTION)


def test_every_problem_of_a_script_is_listed_with_its_section() -> None:
    """All problems are reported at once, each with its section and tag."""
    body = {
        "general": {"(0010,0010)": "set(@nope@)", "remove_curves": "maybe"},
        "proj": {"(0008,1030)": "s/(/x/", "(0028,0010)": "set(abc)", "colour": "red"},
    }
    with pytest.raises(ConfigError) as caught:
        parse_script("s", json.dumps(body))
    lines = str(caught.value).splitlines()
    assert len(lines) == 5
    assert any(line.startswith("section general: (0010,0010): unknown macro") for line in lines)
    assert any(line.startswith("section general: remove_curves:") for line in lines)
    assert any(line.startswith("section proj: (0008,1030): invalid pattern") for line in lines)
    assert any("section proj: (0028,0010): set value is not a number" in line for line in lines)
    assert any(line.startswith("section proj: 'colour'") for line in lines)


def test_not_json_is_refused() -> None:
    """A body that is not JSON says where it breaks."""
    with pytest.raises(ConfigError, match=r"not JSON.*line 1"):
        parse_script("s", "{general: }")


def test_override_order_preset_general_project() -> None:
    """A tag's command comes from the project, else general, else the preset."""
    script = parse_script(
        "s",
        {
            "general": {"(0010,0010)": "set(G)", "(0008,1030)": "keep"},
            "proj": {"(0010,0010)": "set(P)"},
        },
    )
    project = script.assignment("proj").commands
    general = script.assignment(GENERAL).commands
    assert project[PATIENT_NAME].source == "project proj"
    assert general[PATIENT_NAME].source == "general"
    assert project[STUDY_DESCRIPTION].source == "general"
    assert project[PATIENT_ID].source == "preset default"
    assert project[PATIENT_ID].kind is Kind.DUMMY  # Patient ID is D in the Basic Profile


def test_options_per_preset_and_override() -> None:
    """Options start from the preset, then general, then the project; any case, booleans too."""
    script = parse_script(
        "s",
        {
            "general": {"remove_curves": "FALSE", "remove_safe_tags": True},
            "a": {"remove_safe_tags": "false"},
            "b": {"preset": "none", "remove_unknown_tags": "true"},
        },
    )
    general = script.assignment(GENERAL).options
    a = script.assignment("a").options
    b = script.assignment("b")
    assert (general.remove_curves, general.remove_safe_tags, general.remove_unknown_tags) == (
        False,
        True,
        True,
    )
    assert (a.remove_curves, a.remove_safe_tags) == (False, False)
    assert b.preset is Preset.NONE and b.commands == {}
    # Its own preset none, with remove_unknown_tags: curves and overlays go too.
    assert (b.options.remove_unknown_tags, b.options.remove_curves) == (True, True)


def test_preset_default_is_the_basic_profile() -> None:
    """The default preset maps Table E.1-1's Basic Profile: X remove, Z clear, U new UID."""
    commands = parse_script("s", {}).assignment().commands
    assert commands[0x00081030].kind is Kind.REMOVE  # Study Description: X
    assert commands[0x00080050].kind is Kind.CLEAR  # Accession Number: Z
    assert commands[0x00080018].kind is Kind.UID  # SOP Instance UID: U
    assert ROWS not in commands  # not in the table: kept
    assert len(commands) > 600


@pytest.mark.parametrize(
    ("called", "project"),
    [
        ("AZ_MYPROJECT", "myproject"),
        ("az_myproject", "myproject"),
        ("MyProject", "myproject"),
        ("OTHER", GENERAL),
        ("", GENERAL),
    ],
)
def test_project_chosen_by_called_ae_title(called: str, project: str) -> None:
    """The called AE title picks the project in any case, with or without az_."""
    script = parse_script("s", {"general": {}, "myproject": {"name": "M"}})
    assert script.project_for(called) == project
    assert project_key("AZ_Trial") == "trial"


def test_sections_that_collide_are_refused() -> None:
    """Two sections an AE title cannot tell apart (keys that differ in case) are refused."""
    with pytest.raises(ConfigError, match="two project sections"):
        parse_script("s", {"Trial": {}, "trial": {}})


def test_az_prefix_is_stripped_from_the_ae_title_only() -> None:
    """As in mercure: one az_ goes from the AE title; a section key keeps its own az_."""
    script = parse_script("s", {"az_trial": {}, "trial": {}})
    assert script.project_for("AZ_TRIAL") == "trial"
    assert script.project_for("az_az_trial") == "az_trial"


def test_vr_checks_against_the_dictionary() -> None:
    """set on a sequence, a counter on a number and a rewrite of a number are refused."""
    with pytest.raises(ValueError, match="VR SQ"):
        parse_command("set(x)", 0x00081110)
    with pytest.raises(ValueError, match="counter needs a text"):
        parse_command("N__COUNTER-1__", ROWS)
    with pytest.raises(ValueError, match="text attribute"):
        parse_command("s/1/2/", ROWS)
    assert parse_command("set(512)", ROWS).kind is Kind.SET
    # Private tags have no dictionary VR: checked when the object is read.
    assert parse_command("truncdate", 0x00091001).kind is Kind.TRUNCDATE


@pytest.mark.parametrize(
    ("value", "vr", "expected"),
    [
        ("20240315", "DA", "20240101"),
        ("20240315-20240520", "DA", "20240101-20240101"),
        ("-20240520", "DA", "-20240101"),
        ("20240315101010.5+0100", "DT", "20240101101010.5+0100"),
        ("2024", "DT", "20240101"),
    ],
)
def test_truncate_date(value: str, vr: str, expected: str) -> None:
    """truncdate sets month and day to January 1st, keeping time, ranges and offsets."""
    assert truncate_date(value, vr) == expected


@pytest.mark.parametrize("value", ["2024.03.15", "garbage", "202403"])
def test_truncate_date_refuses_what_is_not_a_date(value: str) -> None:
    """A DA value that is not a date is refused (the runner then removes it)."""
    with pytest.raises(ValueError):
        truncate_date(value, "DA")


def test_fake_names_are_unique_per_number() -> None:
    """Fake names are distinct for the first thousands of numbers."""
    names = [fake_name(n) for n in range(1, 3000)]
    assert len(set(names)) == len(names)
    assert all("^" in name for name in names)


def test_path_keys_parse_and_show_as_written() -> None:
    """A path key holds its steps; describe() lists it after the tags, without parameters."""
    script = parse_script(
        "s", {"general": {"preset": "none", "(0040,0275)/(0032,1060)": "set(QZXSECRET)"}}
    )
    assignment = script.assignment()
    assert dict(assignment.paths) == {
        (0x00400275, 0x00321060): assignment.paths[(0x00400275, 0x00321060)]
    }
    assert assignment.describe() == ["(0040,0275)/(0032,1060) set [general]"]
    assert 0x00321060 in assignment.at((0x00400275,))
    assert 0x00321060 not in assignment.at(()) and 0x00321060 not in assignment.at((0x00081032,))


def test_writing_commands_fall_back_to_the_nearest_that_does_not_write_in_items() -> None:
    """In items a set gives way to general's or the preset's command; keep and remove stay."""
    script = parse_script(
        "s",
        {
            "general": {"(0008,0080)": "remove", "(0010,0020)": "set(X)"},
            "p": {"(0008,0080)": "set(Y)", "(0010,4000)": "keep"},
        },
    )
    nested = script.assignment("p").nested
    assert nested[0x00080080].kind is Kind.REMOVE  # general's
    assert nested[0x00100020].kind is Kind.DUMMY  # the preset's D
    assert nested[0x00104000].kind is Kind.KEEP


def test_whitelist_mode_names_only_the_scripts_tags_and_what_the_object_needs() -> None:
    """In whitelist mode the preset applies only to REQUIRED; everything unnamed goes."""
    script = parse_script("s", {"general": {"mode": "whitelist", "(0010,0010)": "keep"}})
    assignment = script.assignment()
    assert assignment.mode is Mode.WHITELIST
    assert set(assignment.commands) <= REQUIRED | {0x00100010}
    assert assignment.commands[0x00080018].kind is Kind.UID
    assert assignment.removes_unnamed(0x00080060)  # Modality: not named
    assert not assignment.removes_unnamed(0x7FE00010)  # Pixel Data: needed
