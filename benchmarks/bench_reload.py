"""Reloads of the node's configuration in a directory shared with dcm4chee-arc.

A private slapd (tests/slapd.py) gets dcm4che's and dcm4chee-arc's slapd schema files and
our ``01-coercion-schema.ldif``, then dcm4chee-arc's base, configuration root and default
configuration (about 1,500 entries), then the node's entries of ``ldif/10-default-config.ldif``
moved under dcm4chee's suffix, plus a forward rule to dcm4chee-arc's ``DCM4CHEE`` AE (so the
node references a dcm4chee device). Then, in rounds, a :class:`ConfigurationWatcher` is timed:

* ``reload, own change``: a rule of the node changed; ``check()`` must reload (True);
* ``poll, unrelated queue``: a task queue of dcm4chee-arc changed (an entry under the device the
  node forwards to, but none it reads); ``check()`` must not reload (False);
* ``poll, unrelated device``: the ``storescp`` device changed; must not reload;
* ``poll, no change``: nothing changed;
* ``whole tree``, the baseline: every entry under the suffix read and built into a
  configuration, what each reload did before the node read only its own entries.

The dcm4chee files are not in this repository: give the folder that holds them. From
dcm4che (``dcm4che-conf/dcm4che-conf-ldap-schema/src/main/resources/ldap/slapd/``):
``dicom.ldif``, ``dcm4che.ldif``; from dcm4chee-arc-light
(``dcm4chee-arc-assembly/src/main/resources/ldap/``): ``slapd/dcm4chee-archive.ldif``,
``init-baseDN.ldif``, ``init-config.ldif``, ``default-config.ldif``.

Usage::

    python benchmarks/bench_reload.py DCM4CHEE_DIR [--repeat 5] [--src DIR]

``--src DIR`` times the ``coercion`` package of another source tree (an older build).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ldap3

REPOSITORY = Path(__file__).resolve().parents[1]


def _source_tree() -> Path:
    """``--src DIR``, read before coercion is imported: the source tree to time."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--src", type=Path, default=REPOSITORY / "src")
    return early.parse_known_args()[0].src.resolve()


sys.path[:0] = [str(_source_tree()), str(REPOSITORY)]

from tests.slapd import Slapd, start_slapd  # noqa: E402

from coercion.directory.config import build_configuration  # noqa: E402
from coercion.directory.ldifio import Entry, format_ldif, read_ldif  # noqa: E402
from coercion.directory.sources import LdapDirectory, LdapSettings  # noqa: E402
from coercion.directory.watch import ConfigurationWatcher  # noqa: E402
from coercion.engine import ActionEnv  # noqa: E402

SUFFIX = "dc=dcm4che,dc=org"
OUR_SUFFIX = "dc=coercion,dc=local"
DEVICES = f"cn=Devices,cn=DICOM Configuration,{SUFFIX}"
NODE = f"dicomDeviceName=coercion,{DEVICES}"
OWN_RULE = f"cn=deidentify-research-store,dicomAETitle=RESEARCH,{NODE}"
UNRELATED_QUEUE = f"dcmQueueName=Export,dicomDeviceName=dcm4chee-arc,{DEVICES}"
UNRELATED_DEVICE = f"dicomDeviceName=storescp,{DEVICES}"
SCHEMAS = ("dicom.ldif", "dcm4che.ldif", "dcm4chee-archive.ldif")
DATA = ("init-baseDN.ldif", "init-config.ldif", "default-config.ldif")
SECRET = bytes(32)


def _prepare(source: Path, work: Path) -> tuple[list[Path], list[Path]]:
    """The schema files and the data files (``version: 1`` lines dropped: slapadd refuses them)."""
    missing = [name for name in (*SCHEMAS, *DATA) if not (source / name).is_file()]
    if missing:
        sys.exit(f"{source}: missing {', '.join(missing)} (see the docstring for where they are)")
    data = []
    for name in DATA:
        text = (source / name).read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line.strip() != "version: 1"]
        (work / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        data.append(work / name)
    ours: list[Entry] = []
    for dn, attrs in read_ldif(REPOSITORY / "ldif" / "10-default-config.ldif"):
        moved = dn.replace(OUR_SUFFIX, SUFFIX)
        if moved.endswith(f",{DEVICES}"):  # dcm4chee has the suffix and the roots
            ours.append((moved, attrs))
    ours.append(
        (
            f"cn=forward-to-dcm4chee,dicomAETitle=COERCION,{NODE}",
            {
                "objectClass": ["coercionForwardRule"],
                "cn": ["forward-to-dcm4chee"],
                "coercionDestinationAETitle": ["DCM4CHEE"],
            },
        )
    )
    (work / "coercion.ldif").write_text(format_ldif(ours), encoding="utf-8")
    data.append(work / "coercion.ldif")
    schemas = [source / name for name in SCHEMAS]
    return [*schemas, REPOSITORY / "ldif" / "01-coercion-schema.ldif"], data


def _whole_tree(connection: ldap3.Connection) -> list[Entry]:
    """Every entry under the suffix, as the node read them before (the baseline)."""
    connection.search(SUFFIX, "(objectClass=*)", attributes=[ldap3.ALL_ATTRIBUTES])
    return [
        (r["dn"], {k: [v.decode() for v in vs] for k, vs in r["raw_attributes"].items()})
        for r in connection.response or []
        if r.get("type") == "searchResEntry"
    ]


def _timed(function: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def _toggle(connection: ldap3.Connection, dn: str, attribute: str, round_: int) -> None:
    ok = connection.modify(dn, {attribute: [(ldap3.MODIFY_REPLACE, [f"{11 + round_ % 2}"])]})
    if not ok:
        sys.exit(f"{dn}: modify refused: {connection.result}")


def _run(server: Slapd, repeat: int, work: Path) -> bool:
    admin = ldap3.Connection(
        ldap3.Server(server.url), server.admin_dn, server.password, auto_bind=True
    )
    baseline = []
    for _ in range(repeat):
        seconds, raw = _timed(lambda: _whole_tree(admin))
        built, _ = _timed(lambda: build_configuration(raw, server.url, ActionEnv(SECRET)))  # noqa: B023
        baseline.append(seconds + built)
    password = work / "password"
    password.write_text(server.password, encoding="utf-8")
    settings = LdapSettings(server.url, server.admin_dn, password, base_dn=SUFFIX)
    source = LdapDirectory(settings)
    snapshot = work / "directory-snapshot.json"  # as the node keeps one
    watcher = ConfigurationWatcher(source, ActionEnv(SECRET), "coercion", 60, snapshot)
    seconds, configuration = _timed(watcher.load_initial)
    print(f"{len(_whole_tree(admin))} entries under {SUFFIX}; first load {seconds:.3f} s")
    rows: dict[str, list[float]] = {}
    results: dict[str, set[object]] = {}
    changes = [
        ("reload, own change", OWN_RULE, "coercionPriority", True),
        ("poll, unrelated queue", UNRELATED_QUEUE, "dcmMaxRetries", False),
        ("poll, unrelated device", UNRELATED_DEVICE, "dicomDescription", False),
        ("poll, no change", None, None, False),
    ]
    try:
        for round_ in range(repeat):
            for label, dn, attribute, _expected in changes:
                if dn is not None and attribute is not None:
                    _toggle(admin, dn, attribute, round_)
                seconds, reloaded = _timed(watcher.check)
                rows.setdefault(label, []).append(seconds)
                results.setdefault(label, set()).add(reloaded)
    finally:
        watcher.stop()
        admin.unbind()
    base = statistics.median(baseline)
    print(f"\n{'row':<26} {'median s':>9} {'whole/t':>8}  reloaded  expected")
    print(f"{'whole tree (baseline)':<26} {base:>9.3f} {1.0:>8.1f}")
    ok = True
    for label, _dn, _attribute, expected in changes:
        median = statistics.median(rows[label])
        seen = results[label]
        passed = seen == {expected}
        ok = ok and passed
        print(
            f"{label:<26} {median:>9.3f} {base / median:>8.1f}  "
            f"{'/'.join(map(str, sorted(seen, key=str))):<8}  {expected} "
            f"{'PASS' if passed else 'MISS'}"
        )
    raw, rules = len(configuration.raw), len(configuration.rules)
    print(f"\nnode's configuration: {raw} entries, {rules} rules")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dcm4chee", type=Path, help="the folder holding the dcm4chee files")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (median shown)")
    parser.add_argument("--src", type=Path, help="time the coercion of another source tree")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="sl", dir="/tmp"))  # short: it holds the socket
    try:
        schemas, data = _prepare(args.dcm4chee.resolve(), directory)
        server = start_slapd(directory / "slapd", schemas, data, SUFFIX)
        try:
            ok = _run(server, args.repeat, directory)
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
