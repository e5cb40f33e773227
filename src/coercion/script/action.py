"""``script:NAME``: run a directory's tag script on the objects a rule selects.

The project section is the one named by the rule's ``project=SECTION``
parameter, else the one the called AE title names (any case, an ``az_``
prefix ignored), else the general section alone. Counters and fake values
are numbered in the pseudonym store under the project's scope
(``SCRIPT/<script>/<project>``), so they are the same in every study, run and
node of the project; new UIDs are derived with the project's key.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping

from pydicom.dataset import Dataset

from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, register_scheme
from coercion.engine.rules import RuleAction
from coercion.profile import Change, Deidentifier, compile_profile
from coercion.script.language import GENERAL, Assignment, Script
from coercion.script.runner import Resources, ScriptRunner
from coercion.store.actions import open_store

__all__ = ["ScriptAction", "log_assignments"]

log = logging.getLogger(__name__)
_PARAMETERS = ("project",)


class ScriptAction:
    """The action of ``script:NAME``."""

    def __init__(self, script: Script, project: str | None, env: ActionEnv) -> None:
        self.script = script
        self.project = project
        self.env = env
        self._runners: dict[str, ScriptRunner] = {}
        self._lock = threading.Lock()

    def project_of(self, ctx: EventContext) -> str:
        """The project section for *ctx*: the rule's ``project=``, else the called AE title's."""
        return self.project or self.script.project_for(ctx.called_ae)

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Run the project's assignment on *ds* in place."""
        project = self.project_of(ctx)
        changes = self.runner(project).run(ds)
        if log.isEnabledFor(logging.DEBUG):  # counts per action letter, as deidentify: logs
            counts = Counter(change.action.value for change in changes)
            log.debug("script:%s project %s: %s", self.script.name, project, dict(counts))
        return changes

    def retention(self, ctx: EventContext) -> Assignment:
        """What the output keeps on purpose (for verification): the project's assignment."""
        return self.script.assignment(self.project_of(ctx))

    def runner(self, project: str) -> ScriptRunner:
        """The runner of *project* (made once)."""
        found = self._runners.get(project)
        if found is None:
            with self._lock:
                found = self._runners.get(project)
                if found is None:
                    assignment = self.script.assignment(project)
                    found = ScriptRunner(assignment, _resources(assignment, self.env))
                    self._runners[project] = found
        return found


def _resources(assignment: Assignment, env: ActionEnv) -> Resources:
    """The store, keys and dummy values of one project (everything keyed per project)."""
    scope_name = assignment.store_scope
    # The preset's dummy tokens and new UIDs in the project's key scope: projects cannot be
    # linked by them.
    deidentifier = Deidentifier(compile_profile(), env.secret, scope_name)
    keys = deidentifier.keys
    url = env.store_url

    def number(counter: str, original: str) -> int:
        return open_store(env, url).scope(scope_name).number_for(counter, original)

    def dummy(tag: int, vr: str, ds: Dataset) -> list[str] | bytes:
        return deidentifier.dummy(tag, vr, ds, keys.uid)

    def keyed_hash(text: str) -> str:  # @hash_acc@: keyed per project, 16 hex digits
        return keys.derive("hash_acc", text)[:8].hex().upper()

    return Resources(number=number, uid=keys.uid, dummy=dummy, keyed_hash=keyed_hash)


def log_assignments(script: Script) -> None:
    """Log the assignment of every section whose ``print_assignment`` is on (no values)."""
    for project in (GENERAL, *script.projects):
        assignment = script.assignment(project)
        if not assignment.options.print_assignment:
            continue
        log.info(
            "script %s project %s: preset %s, %d tags, options %s",
            script.name,
            project,
            assignment.preset.value,
            len(assignment.commands),
            ", ".join(f"{k}={v}" for k, v in vars(assignment.options).items()),
        )
        for line in assignment.describe():
            log.info("script %s project %s: %s", script.name, project, line)


def _script(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    name = spec.strip()
    script = env.scripts.get(name)
    if not isinstance(script, Script):  # the loader puts only Scripts there
        known = ", ".join(sorted(env.scripts)) or "none"
        raise ValueError(
            f"script: no tag script {name!r} in the directory (coercionTagScript entries: {known})"
        )
    unknown = sorted(set(params) - set(_PARAMETERS))
    if unknown:
        raise ValueError(
            f"script: unknown parameter {', '.join(unknown)}; it takes project=SECTION"
        )
    project = params.get("project")
    if project is not None and project not in script.projects and project != GENERAL:
        sections = ", ".join(sorted(script.projects)) or "none"
        raise ValueError(
            f"script:{name}: project={project!r} is not a section of the script "
            f"(project sections: {sections})"
        )
    return ScriptAction(script, project, env)


register_scheme("script", _script)
