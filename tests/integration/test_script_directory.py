"""Tag scripts in the directory: mercure settings imported, applied, rejected, run and shown.

The directory tests run twice, on the embedded directory and on a real slapd.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset

from coercion.directory.config import Configuration, load_configuration
from coercion.directory.convert.mercure import convert_mercure
from coercion.directory.ldifio import format_ldif, read_ldif
from coercion.engine import ActionEnv, Dimse, Engine, EventContext, Role
from coercion.errors import ConfigError
from coercion.resources import default_ldif_dir
from coercion.script import parse_script
from tests.directories import Directory, embedded_directory, store_in
from tests.helpers import DEVICE, SECRET, coercion, make_dataset

pytestmark = pytest.mark.integration

SCRIPT_DN = f"cn=mercure,{DEVICE}"
RULE_DN = f"cn=run-mercure,{DEVICE}"


def rule(script: str = "mercure") -> str:
    """A rule that runs ``script:SCRIPT`` on every C-STORE the node receives."""
    return (
        f"dn: cn=run-{script},{DEVICE}\nobjectClass: coercionRule\ncn: run-{script}\n"
        f"coercionDIMSE: C_STORE_RQ\ndicomTransferRole: SCP\ncoercionURI: script:{script}\n"
    )


def script_entry(body: dict[str, Any] | str, name: str = "mercure") -> str:
    """The LDIF of a ``coercionTagScript`` entry holding *body*."""
    text = body if isinstance(body, str) else json.dumps(body)
    attrs = {"objectClass": ["coercionTagScript"], "cn": [name], "coercionScript": [text]}
    return format_ldif([(f"cn={name},{DEVICE}", attrs)])


def _load(directory: Directory) -> Configuration:
    source = directory.open()
    try:
        return load_configuration(source, ActionEnv(SECRET))
    finally:
        source.close()


# -- import-mercure ------------------------------------------------------------------------------

#: Settings as mercure's documentation describes them: general for every project, a project
#: section overriding it, preset none keeping what the script does not name.
SETTINGS = {
    "general": {
        "preset": "none",
        "(0010,0010)": "set(@fake_name@)",
        "(0010,0020)": "set(ANON)",
        "(0008,0080)": "clear",
        "(0008,1030)": "set(Research study)",
    },
    "myproject": {
        "name": "My project",
        "owner": "Imaging lab",
        "prefix": "MP",
        "(0010,0020)": "MP-__COUNTER-001__",
        "(0008,1030)": "set(@project_name@)",
        "(0008,0050)": "remove",
    },
}

#: mercure always writes new Study, Series and SOP Instance UIDs: the import says so in general.
NEW_UIDS = {k: "set(@random_uid@)" for k in ("(0020,000d)", "(0020,000e)", "(0008,0018)")}

#: Settings with what mercure reads its own way: commands by their start, short and upper-case
#: keys, truncdate on a non-date, a whitelist, @hash_acc@, project keys that differ in case.
ODD = {
    "general": {
        "mode": "whitelist",
        "(0010,0010)": "set(@fake_name@)",
        "(0008,0050)": "set(@hash_acc@)",
        "(0008,0080)": "removed",
        "(28,30)": "keep",
        "(0008,103E)": "keep",
        "(0010,1000)": "truncdate",
        "(0010,2160)": "frobnicate(QZXHOSPITAL)",
    },
    "Trial": {"(0010,0020)": "keep"},
    "trial": {"name": "Trial", "(0010,0020)": "set(T-@value@)"},
}

#: Settings mercure runs but this node cannot: a text set into DS, an unknown macro.
UNCARRIED = {
    "general": {
        "preset": "none",
        "(0018,0050)": "set(QZXTHICK)",
        "(0010,0010)": "set(@nosuch@)",
        "(0010,0020)": "keep",
    }
}


def _import(tmp_path: Path, settings: dict[str, Any], *args: str) -> Any:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings), encoding="utf-8")
    return coercion("config", "import-mercure", path, "--name", "mercure", *args)


def test_import_mercure_maps_what_mercure_runs_and_reports_it(tmp_path: Path) -> None:
    """Commands read by their start, short and upper-case keys, truncdate: mapped, exit 0."""
    out = tmp_path / "script.ldif"
    result = _import(tmp_path, ODD, "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = [line for line in result.stderr.splitlines() if line.startswith("mapped")]
    assert "QZXHOSPITAL" not in result.stderr
    [(_dn, attrs)] = read_ldif(out)
    body = json.loads(attrs["coercionScript"][0])
    assert body["general"] == {
        "mode": "whitelist",
        "(0010,0010)": "set(@fake_name@)",
        "(0008,0050)": "set(@hash_acc@)",
        "(0008,0080)": "remove",  # "removed" starts with remove
        "(0028,0030)": "remove",  # (28,30): mercure's unknown-tag pass removes it
        "(0010,1000)": "clear",  # truncdate on a name
        "(0010,2160)": "remove",  # unknown: mercure stops; nothing of it is written
        **NEW_UIDS,
    }
    assert body["trial"] == {"name": "Trial", "(0010,0020)": "set(T-@value@)"}
    assert "Trial" not in body
    assert any("section Trial: mercure selects section trial" in line for line in report)
    assert any("(0008,0080): mercure reads the command as remove" in line for line in report)
    assert any("(28,30): mercure's unknown-tag pass removes it" in line for line in report)
    assert any("(0008,103E): mercure runs the preset's command" in line for line in report)
    assert any("(0010,1000): truncdate on no date" in line for line in report)
    assert any("(0010,2160): mercure does not know the command" in line for line in report)
    assert "1 script converted, " in result.stderr
    script = parse_script("mercure", body)
    assert script.assignment("trial").mode.value == "whitelist"
    assert (script.assignment("general").name, script.assignment("general").owner) == (
        "Undefined",
        "Unknown",
    )


def test_import_mercure_refuses_what_it_cannot_carry_over(tmp_path: Path) -> None:
    """A set this node cannot run: exit 2, nothing written; --lenient writes those tags removed."""
    out = tmp_path / "script.ldif"
    result = _import(tmp_path, UNCARRIED, "--out", str(out))
    assert result.returncode == 2
    assert "(0018,0050): set value is not a number" in result.stderr
    assert "(0010,0010): unknown macro @nosuch@" in result.stderr
    assert "QZXTHICK" not in result.stderr
    assert not out.exists()
    lenient = _import(tmp_path, UNCARRIED, "--out", str(out), "--lenient")
    assert lenient.returncode == 0, lenient.stderr
    [(_dn, attrs)] = read_ldif(out)
    body = json.loads(attrs["coercionScript"][0])
    assert body["general"]["(0018,0050)"] == body["general"]["(0010,0010)"] == "remove"
    assert body["general"]["(0010,0020)"] == "keep"
    assert "(0018,0050): set value is not a number" in lenient.stderr


def test_import_mercure_never_keeps_the_sop_instance_uid(tmp_path: Path) -> None:
    """keep on SOP Instance UID: mercure writes a new one anyway, so does the imported script."""
    settings = {"general": {"preset": "none"}, "p": {"(0008,0018)": "keep"}}
    (_dn, attrs), report = convert_mercure(json.dumps(settings), "mercure", DEVICE)
    body = json.loads(attrs["coercionScript"][0])
    assert body["p"]["(0008,0018)"] == "set(@random_uid@)"
    assert any("section p: (0008,0018): mercure always writes a new UID" in r for r in report)


def test_import_mercure_unwraps_a_task_file() -> None:
    """Settings held by a mercure task file under process.settings convert as the settings do."""
    task = {"id": "task-1", "process": {"module_name": "anonymizer", "settings": SETTINGS}}
    entry, report = convert_mercure(json.dumps(task), "mercure", DEVICE, "task.json")
    assert report == []
    expected = {**SETTINGS, "general": {**SETTINGS["general"], **NEW_UIDS}}
    assert json.loads(entry[1]["coercionScript"][0]) == expected


def test_import_mercure_escapes_the_name_in_the_dn() -> None:
    """A name with DN special characters is escaped in the RDN and kept as written in cn."""
    (dn, attrs), _report = convert_mercure(json.dumps(SETTINGS), "a,b+c ", DEVICE)
    assert dn == f"cn=a\\,b\\+c\\ ,{DEVICE}"
    assert attrs["cn"] == ["a,b+c "]


# -- the script applied through the directory ----------------------------------------------------


def _apply(engine: Engine, called: str) -> Dataset:
    ctx = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", called)
    outcome = engine.apply(make_dataset(), ctx)
    assert [a.rule.name for a in outcome.applied] == ["run-mercure"]
    return outcome.dataset


def test_an_imported_script_behaves_as_mercure_documents(directory: Directory) -> None:
    """General applies everywhere, a project overrides it, the AE title picks the project."""
    entry, report = convert_mercure(json.dumps(SETTINGS), "mercure", DEVICE)
    assert report == []
    directory.add(format_ldif([entry]) + "\n" + rule())
    engine = Engine(_load(directory).rules)
    original = make_dataset()
    for called in ("AZ_MYPROJECT", "myproject", "Az_MyProject", "MYPROJECT"):
        ds = _apply(engine, called)
        assert ds.PatientID == "MP-001"  # the project's counter, not general's ANON
        assert ds.StudyDescription == "My project"  # the project overrides general
        assert "AccessionNumber" not in ds  # the project's own command
        assert ds.PatientName == "Alpha^Alpha"  # general's command, in every project
        assert ds.InstitutionName == ""
        assert ds.PatientBirthDate == original.PatientBirthDate  # preset none keeps the rest
        assert ds.SOPInstanceUID != original.SOPInstanceUID  # mercure always writes a new one
    other = _apply(engine, "COERCION")  # no project of that name: general alone
    assert other.PatientID == "ANON"
    assert other.StudyDescription == "Research study"
    assert other.AccessionNumber == original.AccessionNumber
    assert other.PatientName == "Alpha^Alpha"
    assert other.InstitutionName == ""
    assert other.PatientBirthDate == original.PatientBirthDate


@pytest.mark.parametrize(
    ("entries", "dn", "message"),
    [
        (
            script_entry({"myproject": {"(0008,1030)": "s/(unclosed/x/"}}) + "\n" + rule(),
            SCRIPT_DN,
            "attribute coercionScript: section myproject: (0008,1030): invalid pattern",
        ),
        (
            script_entry({"general": {"mode": "whitelist", "remove_curves": "yes"}})
            + "\n"
            + rule(),
            SCRIPT_DN,
            'attribute coercionScript: $.general.remove_curves: must be "true" or "false"',
        ),
        (
            script_entry({"general": {"(0010,0010)": "remove"}}) + "\n" + rule("nosuch"),
            f"cn=run-nosuch,{DEVICE}",
            "attribute coercionURI: script: no tag script 'nosuch'",
        ),
    ],
    ids=["invalid-regex", "schema-violation", "unknown-script"],
)
def test_bad_scripts_are_rejected_with_dn_and_attribute(
    directory: Directory, entries: str, dn: str, message: str
) -> None:
    """An invalid regex, a body against its schema, an unknown script: DN and attribute named."""
    directory.add(entries)
    with pytest.raises(ConfigError) as caught:
        _load(directory)
    assert f"{dn}: {message}" in str(caught.value)


def test_a_schema_violation_names_every_key_and_skips_the_parser(tmp_path: Path) -> None:
    """Each schema problem is one line with its JSON path; the parser does not repeat them."""
    directory = embedded_directory(tmp_path)
    directory.add(
        script_entry({"general": {"mode": "greylist", "remove_curve": "true", "preset": "all"}})
    )
    with pytest.raises(ConfigError) as caught:
        _load(directory)
    lines = str(caught.value).splitlines()
    where = f"{SCRIPT_DN}: attribute coercionScript: "
    assert [line.split(where, 1)[1].split(":")[0] for line in lines] == [
        "$.general.mode",
        "$.general.preset",
        "$.general.remove_curve",
    ]
    assert "(did you mean remove_curves?)" in lines[2]
    assert "'all' is not in the expected form (default or none)" in lines[1]


# -- the command line ----------------------------------------------------------------------------

#: The end-to-end script: the Basic Profile for everything, the project's own identifiers.
E2E = {
    "general": {
        "preset": "default",
        "(0010,0010)": "set(@fake_name@)",
        "(0008,0050)": "set(@fake_acc@)",
    },
    "myproject": {
        "name": "My project",
        "owner": "Imaging lab",
        "prefix": "MP",
        "(0010,0020)": "MP-__COUNTER-001__",
        "(0008,1030)": "s/^CT (\\w+).*/CT $1/",
        "(0008,0080)": "set(@project_name@)",
    },
}


def config_dir(tmp_path: Path) -> Path:
    """The default configuration with the E2E script (imported by the CLI) and its rule."""
    folder = tmp_path / "config"
    shutil.copytree(default_ldif_dir(), folder)
    store_in(folder, tmp_path / "data" / "store.db")
    (folder / "20-script.ldif").write_text(script_entry(E2E) + "\n" + rule(), encoding="utf-8")
    return folder


def test_deidentify_runs_the_script_of_the_called_project(tmp_path: Path) -> None:
    """coercion deidentify --called AZ_MYPROJECT runs the project's commands on every file."""
    config, source, out = config_dir(tmp_path), tmp_path / "in", tmp_path / "out"
    source.mkdir()
    patients = [("QZXDOE^JANE", "QZXP1"), ("QZXROE^RICH", "QZXP2"), ("QZXDOE^JANE", "QZXP1")]
    for index, (name, patient_id) in enumerate(patients):
        ds = make_dataset(patient=name, patient_id=patient_id)
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.7.{index}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        dcmwrite(source / f"{index}.dcm", ds, enforce_file_format=True)
    key = tmp_path / "secret.key"
    result = coercion(
        "deidentify",
        "--config-dir",
        config,
        "--called",
        "AZ_MYPROJECT",
        "--key",
        key,
        source,
        out,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "3 written" in result.stderr
    outputs = [dcmread(out / f"{index}.dcm") for index in range(3)]
    assert [ds.PatientID for ds in outputs] == ["MP-001", "MP-002", "MP-001"]
    assert outputs[0].PatientName == outputs[2].PatientName != outputs[1].PatientName
    assert all(ds.StudyDescription == "CT head" for ds in outputs)
    assert all(ds.InstitutionName == "My project" for ds in outputs)
    assert {ds.AccessionNumber for ds in outputs} == {"ACC0000001"}
    originals = [dcmread(source / f"{index}.dcm") for index in range(3)]
    for ds, original in zip(outputs, originals, strict=True):
        assert ds.SOPInstanceUID != original.SOPInstanceUID  # the default preset's U
        assert ds.get("PatientBirthDate", "") == ""  # the default preset's Z
        assert "QZX" not in str(ds.PatientName) + ds.PatientID
    assert (tmp_path / "data" / "store.db").exists()


def test_config_show_lists_the_scripts_and_their_sections(tmp_path: Path) -> None:
    """config show lists each script's sections with name, owner, prefix, preset and count."""
    result = coercion("config", "show", "--config-dir", config_dir(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "tag scripts" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ mercure ")]
    assert len(rows) == 2
    assert all(word in rows[0] for word in ("general", "default", "2"))
    assert all(
        word in rows[1]
        for word in ("myproject", "My project", "Imaging lab", "MP", "default (not set)", "3")
    )
    assert "@fake_name@" not in result.stdout and "COUNTER" not in result.stdout


def test_deidentify_verifies_what_the_script_does_not_keep_on_purpose(tmp_path: Path) -> None:
    """Verification skips what the script keeps and fails an ID a substitution left as it was."""
    config, source, out = tmp_path / "config", tmp_path / "in", tmp_path / "out"
    shutil.copytree(default_ldif_dir(), config)
    store_in(config, tmp_path / "data" / "store.db")
    body = {"general": {"(0010,0010)": "keep", "(0010,0020)": "s/^NOMATCH//"}}
    (config / "20-script.ldif").write_text(script_entry(body) + "\n" + rule(), encoding="utf-8")
    source.mkdir()
    dcmwrite(source / "a.dcm", make_dataset("QZXKEPT^NAME", "QZXLEFT-ID"), enforce_file_format=True)
    args = ("deidentify", "--config-dir", config, "--key", tmp_path / "k.key", source)
    checked = coercion(*args, out, cwd=tmp_path)
    assert checked.returncode == 1
    assert "PatientID" in checked.stderr and "PatientName" not in checked.stderr
    assert "QZX" not in checked.stderr + checked.stdout
    assert not (out / "a.dcm").exists()
    unchecked = coercion(*args, "--no-verify", tmp_path / "out2", cwd=tmp_path)
    assert unchecked.returncode == 0, unchecked.stderr
    written = dcmread(tmp_path / "out2" / "a.dcm")
    assert (written.PatientName, written.PatientID) == ("QZXKEPT^NAME", "QZXLEFT-ID")


def test_explain_previews_a_script_without_numbering_anything(tmp_path: Path) -> None:
    """explain shows a script's actions per tag but takes no counter number in the store."""
    config = config_dir(tmp_path)
    source = tmp_path / "a.dcm"
    dcmwrite(source, make_dataset("QZXDOE^JANE", "QZXP1"), enforce_file_format=True)
    for _ in range(2):
        result = coercion(
            "explain", source, "--config-dir", config, "--called", "AZ_MYPROJECT", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert "script:mercure" in result.stdout and "PatientID" in result.stdout
        flat = " ".join(result.stdout.split())
        assert "apply at every sequence depth" in flat and "top level only" in flat
        assert "QZX" not in result.stdout + result.stderr
    assert not (tmp_path / "data" / "store.db").exists()
    assert not (tmp_path / ".coercion").exists()
