"""The console's pages: server-rendered Jinja2 templates; changes go through the JSON API."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from coercion import __version__
from coercion.console.api import overview, rule_of, session_of, state_of
from coercion.console.rules import form_fields, option_choices, rule_rows
from coercion.console.scripts import SCRIPT, script_rows
from coercion.engine import Dimse, Role

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(files("coercion.console") / "templates"))
templates.env.globals["version"] = __version__


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    session = request.state.session
    response = templates.TemplateResponse(
        request, name, {"session": session, "csrf": session.csrf if session else "", **context}
    )
    # Pages may show values a person must not find in a shared cache or the back button.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"
    )
    return response


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request) -> Response:
    """The sign-in form."""
    if request.state.session is not None:
        return RedirectResponse("/", status_code=303)
    return _page(request, "signin.html", ldap=state_of(request).ldap_accounts)


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request) -> HTMLResponse:
    """The overview: the node, its rules, traffic, queues and the directory."""
    return _page(request, "overview.html", overview=overview(request))


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request) -> HTMLResponse:
    """The rules table (sortable and filterable in the browser)."""
    return _page(request, "rules.html", rows=rule_rows(state_of(request).configuration))


@router.get("/rules/view", response_class=HTMLResponse)
def rule_page(dn: str, request: Request) -> HTMLResponse:
    """One rule's entry, with its actions."""
    entry = rule_of(request, dn)
    enabled = entry.get("dicomInstalled", True) is not False
    return _page(request, "rule.html", entry=entry, dn=dn, enabled=enabled)


def _form(request: Request, entry: dict[str, Any] | None, dn: str | None) -> HTMLResponse:
    session = session_of(request)
    if not session.admin:
        raise HTTPException(403, "only an admin may change rules")
    configuration = state_of(request).configuration
    uri = str((entry or {}).get("coercionURI", ""))
    scheme, _, rest = uri.partition(":")
    chosen = set(rest.split(",")) if scheme == "deidentify" else set()
    return _page(
        request,
        "rule_form.html",
        entry=entry or {},
        dn=dn,
        fields=form_fields(),
        options=option_choices(),
        chosen=chosen,
        ae_titles=[ae.title for ae in configuration.device.aes],
    )


@router.get("/rules/new", response_class=HTMLResponse)
def new_rule_page(request: Request) -> HTMLResponse:
    """The form for a new rule."""
    return _form(request, None, None)


@router.get("/rules/edit", response_class=HTMLResponse)
def edit_rule_page(dn: str, request: Request) -> HTMLResponse:
    """The form for an existing rule."""
    entry = rule_of(request, dn)
    return _form(request, entry, dn)


@router.get("/preview", response_class=HTMLResponse)
def preview_page(request: Request) -> HTMLResponse:
    """Upload a file and see the rules' actions on it (admins)."""
    if not session_of(request).admin:
        raise HTTPException(403, "only an admin may preview objects")
    configuration = state_of(request).configuration
    return _page(
        request,
        "preview.html",
        ae_titles=[ae.title for ae in configuration.device.aes],
        dimses=[d.value for d in Dimse],
        roles=[r.value for r in Role],
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request) -> HTMLResponse:
    """The audit trail, filtered and paged in the browser through the API."""
    return _page(request, "audit.html", dimses=[d.value for d in Dimse])


@router.get("/scripts", response_class=HTMLResponse)
def scripts_page(request: Request) -> HTMLResponse:
    """The tag scripts, and the import of mercure settings (admins)."""
    return _page(request, "scripts.html", rows=script_rows(state_of(request).configuration))


@router.get("/scripts/edit", response_class=HTMLResponse)
def script_form_page(request: Request, dn: str = "") -> HTMLResponse:
    """The form of a tag script (a new one without *dn*)."""
    if not session_of(request).admin:
        raise HTTPException(403, "only an admin may change tag scripts")
    entry: dict[str, Any] = {}
    body = '{\n "general": {\n  "preset": "default"\n }\n}'
    if dn:
        found = state_of(request).rules.entry(dn, SCRIPT)
        if found is None:
            raise HTTPException(404, "no such tag script")
        entry = found
        body = _pretty(entry["coercionScript"])
    return _page(request, "script_form.html", entry=entry, dn=dn, body=body)


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=1)
    except ValueError:
        return text
