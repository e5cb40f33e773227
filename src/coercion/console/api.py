"""The console's JSON API (``/api/...``): sessions, the overview and the rules.

The pages make every change through these endpoints. A rule that does not
pass the checks the node applies when it loads the directory is answered with
422 and ``{"problems": {attribute: [what, ...]}}``; nothing is written then.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from coercion.console.accounts import Role
from coercion.console.audit import AuditQuery, read_audit
from coercion.console.preview import MAX_UPLOAD, preview
from coercion.console.preview import context as preview_context
from coercion.console.queues import discard_failed, queues, retry_failed
from coercion.console.rules import (
    GENERAL,
    Problems,
    form_fields,
    option_choices,
    rule_rows,
    to_entry,
)
from coercion.console.scripts import SCRIPT, script_rows, script_values
from coercion.console.sessions import COOKIE, CSRF_HEADER, Session
from coercion.console.state import ConsoleState, counter_totals, rule_failures
from coercion.directory.entries import EntryJSON
from coercion.errors import CoercionError

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api")


class SignIn(BaseModel):
    """A name (with --ldap: a DN) and a password."""

    name: str = Field(min_length=1)
    password: str = Field(min_length=1)


class SessionInfo(BaseModel):
    """The signed-in person, their role and the CSRF token for changes."""

    name: str
    role: Role
    csrf: str


class RuleIn(BaseModel):
    """A rule as its entry's attributes (JSON form), for one AE title of the node or all."""

    ae_title: str | None = Field(
        default=None, description="The node's AE title the rule is for; null: every AE title"
    )
    entry: dict[str, Any] = Field(description="cn, coercionURI, coercionDIMSE, ... (schema)")


class ScriptIn(BaseModel):
    """A tag script: its name (for a new one), its JSON body (text or object), a description."""

    name: str = ""
    body: Any
    description: str = ""


class MercureIn(BaseModel):
    """mercure anonymizer settings (or a task file holding them), as text, and the script's name.

    With *lenient*, commands that have no counterpart here are dropped (their tags
    removed) instead of refusing the whole file.
    """

    name: str = Field(min_length=1)
    settings: str = Field(min_length=1)
    lenient: bool = False


class Enabled(BaseModel):
    """Whether a rule applies (its dicomInstalled)."""

    enabled: bool


def state_of(request: Request) -> ConsoleState:
    """The console's state."""
    state: ConsoleState = request.app.state.console
    return state


def session_of(request: Request) -> Session:
    """The request's session (the gate let only signed-in requests through)."""
    session: Session | None = request.state.session
    if session is None:
        raise HTTPException(401, "sign in first")
    return session


def rule_of(request: Request, dn: str) -> EntryJSON:
    """The rule *dn* as the directory holds it now (404 when there is none)."""
    entry = state_of(request).rules.entry(dn)
    if entry is None:
        raise HTTPException(404, "no such rule")
    return entry


# -- session -----------------------------------------------------------------------------


@router.post("/session", response_model=SessionInfo, tags=["session"])
def sign_in(body: SignIn, request: Request, response: Response) -> SessionInfo:
    """Sign in; sets the session cookie. 401 when the name or password is wrong."""
    state = state_of(request)
    address = request.client.host if request.client else ""
    wait = math.ceil(state.throttle.wait(address, body.name))
    if wait > 0:
        log.warning("console: sign-in from %s refused for %d s: too many failures", address, wait)
        raise HTTPException(
            429,
            f"too many failed sign-ins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    try:
        role = state.accounts.authenticate(body.name, body.password)
    except CoercionError as exc:
        raise HTTPException(503, str(exc)) from None
    if role is None:
        state.throttle.failed(address, body.name)
        log.warning("console: sign-in from %s refused", address)
        raise HTTPException(401, "wrong name or password, or no console role")
    state.throttle.succeeded(address, body.name)
    token, session = state.sessions.open(body.name, role)
    log.info("console: %s signed in (%s)", body.name, role.value)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", secure=state.secure, path="/"
    )
    return SessionInfo(name=session.name, role=session.role, csrf=session.csrf)


@router.get("/session", response_model=SessionInfo, tags=["session"])
def who(request: Request) -> SessionInfo:
    """The signed-in person (401 when nobody is)."""
    session = session_of(request)
    return SessionInfo(name=session.name, role=session.role, csrf=session.csrf)


@router.delete("/session", status_code=204, tags=["session"])
def sign_out(request: Request) -> Response:
    """Sign out (needs the CSRF token)."""
    session = session_of(request)
    if not session.csrf_ok(request.headers.get(CSRF_HEADER)):
        raise HTTPException(403, f"missing or wrong {CSRF_HEADER}")
    state_of(request).sessions.close(request.cookies.get(COOKIE))
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- overview ----------------------------------------------------------------------------


@router.get("/overview", tags=["overview"])
def overview(request: Request) -> dict[str, Any]:
    """AE titles, addresses, the rules loaded, traffic, rule failures, queues, the directory."""
    state = state_of(request)
    watcher = state.watcher
    configuration = state.configuration
    per_minute = state.per_minute()
    return {
        "ae_titles": state.ae_titles(),
        "dicom_address": state.dicom_address,
        "http_address": state.http_address,
        "rules": {
            "count": len(configuration.rules),
            "origin": configuration.origin,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(watcher.loaded_at)),
            "from_snapshot": watcher.from_snapshot,
            "reloads": watcher.reloads,
            "rejected": watcher.rejected,
        },
        "directory": {
            "origin": watcher.source.origin,
            "reachable": watcher.last_error is None,
            "last_error": watcher.last_error,
        },
        "objects": [
            {
                "called_ae": ae,
                "result": result,
                "total": int(total),
                "per_minute": round(per_minute.get((ae, result), 0.0), 1),
            }
            for (ae, result), total in sorted(counter_totals().items())
        ],
        "rule_failures": rule_failures(),
        "queues": queues(state.data),
    }


def _on_failed(
    request: Request, destination: str, action: Callable[[Path, str], int], done: str
) -> dict[str, Any]:
    """Apply *action* to *destination*'s failed objects; log and answer how many were *done*."""
    try:
        count = action(state_of(request).data, destination)
    except CoercionError as exc:
        raise HTTPException(404, str(exc)) from None
    log.info("console: %s %s %d objects for %s", session_of(request).name, done, count, destination)
    return {"destination": destination, done: count}


@router.post("/queues/{destination}/retry", tags=["overview"])
def retry_queue(destination: str, request: Request) -> dict[str, Any]:
    """Put the objects that could not be forwarded to *destination* back in its queue."""
    return _on_failed(request, destination, retry_failed, "retried")


@router.post("/queues/{destination}/discard", tags=["overview"])
def discard_queue(destination: str, request: Request) -> dict[str, Any]:
    """Delete the objects that could not be forwarded to *destination*."""
    return _on_failed(request, destination, discard_failed, "discarded")


# -- audit and preview ---------------------------------------------------------------------


@router.get("/audit", tags=["audit"])
def audit(
    request: Request,
    since: str = "",
    until: str = "",
    ae_title: str = "",
    dimse: str = "",
    rule: str = "",
    status: str = "",
    page: int = Query(1, ge=1),
    per_page: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    """Audit lines, newest first, filtered by time (ISO 8601 UTC), AE title, DIMSE, rule and
    status (``0x0000`` or ``failed``); one page of *per_page*."""
    query = AuditQuery(since, until, ae_title, dimse, rule, status, page, per_page)
    return read_audit(state_of(request).data / "audit", query)


@router.post(
    "/preview",
    tags=["preview"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def preview_object(
    request: Request,
    calling: str = "",
    called: str = "",
    dimse: str = "C_STORE_RQ",
    role: str = "SCP",
) -> Response:
    """The rules that apply to the DICOM object in the body and, per attribute, the action and
    the values before and after. Admins only; the object is neither kept nor logged."""
    try:
        ctx = preview_context(calling, called, dimse, role)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_UPLOAD:
            raise HTTPException(413, f"objects up to {MAX_UPLOAD // 2**20} MiB can be previewed")
    state = state_of(request)
    try:
        result = await run_in_threadpool(
            preview, bytes(data), state.configuration, state.secret, ctx
        )
    except CoercionError as exc:
        raise HTTPException(422, str(exc)) from None
    finally:
        data.clear()
    return JSONResponse(result, headers={"Cache-Control": "no-store"})


# -- rules -------------------------------------------------------------------------------


@router.get("/rules", tags=["rules"])
def list_rules(request: Request) -> list[dict[str, Any]]:
    """The node's rules (enabled or not) as ``config show`` lists them, in order."""
    return rule_rows(state_of(request).configuration)


@router.get("/rules/form", tags=["rules"])
def rule_form(request: Request) -> dict[str, Any]:
    """The fields of a rule (from its JSON Schema), the PS3.15 options, the node's AE titles."""
    return {
        "fields": [field.__dict__ for field in form_fields()],
        "options": [{"name": n, "meaning": m} for n, m in option_choices()],
        "ae_titles": [ae.title for ae in state_of(request).configuration.device.aes],
    }


@router.get("/rule", tags=["rules"])
def get_rule(dn: str, request: Request) -> dict[str, Any]:
    """One rule's entry as the directory holds it (JSON form)."""
    return rule_of(request, dn)


def _refused(problems: Problems) -> JSONResponse:
    return JSONResponse({"problems": problems.by_field}, status_code=422)


@router.post("/rules", status_code=201, tags=["rules"])
def create_rule(body: RuleIn, request: Request) -> Any:
    """Check a new rule with the whole directory and write it; 422 with the problems."""
    state = state_of(request)
    configuration = state.configuration
    name = str(body.entry.get("cn") or "")
    problems = Problems()
    if not name.strip():
        problems.add("cn", "missing (every rule needs a name)")
    try:
        parent = state.rules.parent_dn(configuration, body.ae_title)
    except KeyError:
        problems.add("ae_title", f"not an AE title of {configuration.device.name}")
    if problems:
        return _refused(problems)
    dn = state.rules.rule_dn(parent, name)
    if state.rules.entry(dn) is not None:
        problems.add("cn", "a rule of this name exists already here")
        return _refused(problems)
    return _save(state, dn, body.entry, session_of(request), "created", 201)


@router.put("/rule", tags=["rules"])
def update_rule(dn: str, body: RuleIn, request: Request) -> Any:
    """Check a changed rule with the whole directory and write it; 422 with the problems."""
    state = state_of(request)
    current = rule_of(request, dn)
    if body.entry.get("cn", current["cn"]) != current["cn"]:
        problems = Problems()
        problems.add("cn", "a rule's name cannot change; create a new rule and delete this one")
        return _refused(problems)
    return _save(state, dn, {**body.entry, "cn": current["cn"]}, session_of(request), "changed")


@router.put("/rule/enabled", tags=["rules"])
def enable_rule(dn: str, body: Enabled, request: Request) -> Any:
    """Enable or disable a rule (its dicomInstalled)."""
    state = state_of(request)
    current = rule_of(request, dn)
    values = {k: v for k, v in current.items() if k not in ("dn", "objectClass")}
    values["dicomInstalled"] = body.enabled
    what = "enabled" if body.enabled else "disabled"
    return _save(state, dn, values, session_of(request), what)


@router.delete("/rule", tags=["rules"])
def delete_rule(dn: str, request: Request) -> Any:
    """Delete a rule (after checking the directory without it)."""
    state = state_of(request)
    rule_of(request, dn)
    if (refused := _refusal(lambda: state.rules.delete(dn))) is not None:
        return refused
    log.info("console: %s deleted the rule %s", session_of(request).name, dn)
    return {"dn": dn, "deleted": True}


def _general(exc: CoercionError) -> Problems:
    problems = Problems()
    problems.add(GENERAL, str(exc))
    return problems


def _refusal(write: Callable[[], Problems]) -> JSONResponse | None:
    """Run a write to the directory; the 422 answer when it is refused (the problems the
    check found, or why the directory refused the write or could not be reached), else None."""
    try:
        problems = write()
    except CoercionError as exc:
        return _refused(_general(exc))
    return _refused(problems) if problems else None


def _save(
    state: ConsoleState,
    dn: str,
    values: dict[str, Any],
    session: Session,
    what: str,
    status: int = 200,
    kind: str = "coercionRule",
) -> Any:
    if (refused := _refusal(lambda: state.rules.save(to_entry(dn, values, kind)))) is not None:
        return refused
    log.info("console: %s %s the rule %s", session.name, what, dn)
    return JSONResponse({"dn": dn, what: True}, status_code=status)


# -- tag scripts -------------------------------------------------------------------------


@router.get("/scripts", tags=["scripts"])
def list_scripts(request: Request) -> list[dict[str, Any]]:
    """The directory's tag scripts."""
    return script_rows(state_of(request).configuration)


@router.get("/script", tags=["scripts"])
def get_script(dn: str, request: Request) -> dict[str, Any]:
    """One tag script's entry (its body as JSON text in coercionScript)."""
    entry = state_of(request).rules.entry(dn, SCRIPT)
    if entry is None:
        raise HTTPException(404, "no such tag script")
    return entry


@router.post("/scripts", status_code=201, tags=["scripts"])
def create_script(body: ScriptIn, request: Request) -> Any:
    """Check a new tag script (body schema, commands) with the whole directory; write it."""
    state = state_of(request)
    name = body.name.strip()
    if not name or name != body.name:
        problems = Problems()
        problems.add("cn", "a name without spaces at its ends is needed")
        return _refused(problems)
    dn = state.rules.rule_dn(state.configuration.device.dn, name)
    if state.rules.entry(dn, SCRIPT) is not None:
        problems = Problems()
        problems.add("cn", "a tag script of this name exists already")
        return _refused(problems)
    values = script_values(name, body.body, body.description)
    return _save(state, dn, values, session_of(request), "created", 201, SCRIPT)


@router.put("/script", tags=["scripts"])
def update_script(dn: str, body: ScriptIn, request: Request) -> Any:
    """Check a changed tag script with the whole directory; write it."""
    state = state_of(request)
    current = state.rules.entry(dn, SCRIPT)
    if current is None:
        raise HTTPException(404, "no such tag script")
    values = script_values(current["cn"], body.body, body.description)
    if "dicomInstalled" in current:
        values["dicomInstalled"] = current["dicomInstalled"]
    return _save(state, dn, values, session_of(request), "changed", 200, SCRIPT)


@router.post("/scripts/import-mercure", status_code=201, tags=["scripts"])
def import_mercure(body: MercureIn, request: Request) -> Any:
    """Convert mercure settings into a tag script (as ``config import-mercure``) and write it.

    The answer lists what was mapped or dropped (``report``).
    """
    from coercion.directory.convert.mercure import convert_mercure

    state = state_of(request)
    try:
        entry, report = convert_mercure(
            body.settings,
            body.name,
            state.configuration.device.dn,
            "the settings",
            lenient=body.lenient,
        )
    except CoercionError as exc:
        problems = Problems()
        for line in str(exc).splitlines():
            problems.add("settings", line)
        return _refused(problems)
    if state.rules.entry(entry[0], SCRIPT) is not None:
        problems = Problems()
        problems.add("name", "a tag script of this name exists already")
        return _refused(problems)
    if (refused := _refusal(lambda: state.rules.save(entry))) is not None:
        return refused
    log.info("console: %s imported the tag script %s", session_of(request).name, entry[0])
    return JSONResponse({"dn": entry[0], "created": True, "report": report}, status_code=201)
