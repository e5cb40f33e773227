"""``xslt:STYLESHEET``: transform the object's PS3.19 XML with an XSLT 1.0 stylesheet, merge back.

The object (without pixel data) is given to the stylesheet as
``NativeDicomModel`` XML (:mod:`.nativexml`); every attribute of the result
replaces the object's (a sequence with all its items); the Specific Character
Set stays the object's. The stylesheet gets the parameters
``SendingApplicationEntityTitle``, ``ReceivingApplicationEntityTitle``,
``SendingHostname`` and ``ReceivingHostname``, as in dcm4chee-arc, whose
stylesheets run unchanged.

STYLESHEET is a path or a ``file:`` URL (relative paths from the current
folder); it is compiled when the rules load. The parameter
``xsl-no-keyword=true`` leaves the ``keyword`` attributes out of the XML.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from lxml import etree
from pydicom.dataset import Dataset

from coercion.coerce.charset import adopt_character_set
from coercion.coerce.nativexml import from_xml, to_xml
from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, register_scheme
from coercion.engine.rules import RuleAction
from coercion.errors import RuleFailedError
from coercion.profile import Action, Change

__all__ = [
    "Stylesheet",
    "XsltAction",
    "context_params",
    "load_stylesheet",
    "merge_result",
    "parse_flag",
    "transform",
]

log = logging.getLogger(__name__)
_SPECIFIC_CHARACTER_SET = 0x00080005


def parse_flag(scheme: str, params: Mapping[str, str], name: str) -> bool:
    """A ``true``/``false`` parameter (default false); ValueError for anything else."""
    value = params.get(name, "false").strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"{scheme}: {name}= takes true or false")
    return value == "true"


class Stylesheet:
    """A compiled stylesheet; one transformation at a time (lxml's XSLT objects are not
    documented as safe to run from several threads at once)."""

    def __init__(self, path: Path, xslt: etree.XSLT) -> None:
        self.path = path
        self.xslt = xslt
        self.lock = threading.Lock()


def load_stylesheet(scheme: str, uri: str, env: ActionEnv) -> Stylesheet:
    """The compiled stylesheet at *uri* (once per environment); ValueError saying what is wrong."""
    text = uri.strip()
    if "${" in text:
        raise ValueError(
            f"{scheme}: {text!r} names a dcm4chee-arc system property; give the stylesheet's "
            "path or file: URL instead"
        )
    if text.startswith("file:"):
        text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    elif "://" in text:
        raise ValueError(f"{scheme}: {text!r}: only paths and file: URLs are read")
    if not text:
        raise ValueError(
            f"{scheme}: name the stylesheet, e.g. {scheme}:/etc/coercion/mwl2series.xsl"
        )
    path = Path(text).resolve()

    def compile_stylesheet() -> Stylesheet:
        try:
            compiled = etree.XSLT(etree.parse(str(path)))
        except OSError:
            raise ValueError(f"{scheme}: cannot read the stylesheet {path}") from None
        except (etree.XMLSyntaxError, etree.XSLTParseError) as exc:
            raise ValueError(f"{scheme}: {path} is not an XSLT 1.0 stylesheet ({exc})") from None
        return Stylesheet(path, compiled)

    return env.shared(("xslt", str(path)), Stylesheet, compile_stylesheet)


def transform(
    ds: Dataset, stylesheet: Stylesheet, keywords: bool, params: Mapping[str, str], what: str
) -> Dataset:
    """*ds* through *stylesheet*: the attributes of the result."""
    quoted = {name: etree.XSLT.strparam(value) for name, value in params.items() if value}
    document = etree.ElementTree(to_xml(ds, keywords))
    try:
        with stylesheet.lock:
            result = stylesheet.xslt(document, **quoted)
    except etree.XSLTApplyError:
        raise RuleFailedError(f"{what}: the stylesheet failed", kind="stylesheet failed") from None
    root = result.getroot()
    if root is None:
        return Dataset()
    if root.tag != "NativeDicomModel":
        raise RuleFailedError(
            f"{what}: the stylesheet's result is <{root.tag}>, not <NativeDicomModel>",
            kind="stylesheet result not DICOM",
        )
    try:
        return from_xml(root)
    except ValueError as exc:
        raise RuleFailedError(f"{what}: result: {exc}", kind="stylesheet result invalid") from None


def merge_result(ds: Dataset, new: Dataset) -> list[Change]:
    """Every attribute of *new* replaces *ds*'s, in *ds*'s character set.

    A value that set cannot encode moves the object to UTF-8
    (:func:`~coercion.coerce.charset.adopt_character_set`).
    """
    changes = []
    for elem in new:
        tag = int(elem.tag)
        if tag == _SPECIFIC_CHARACTER_SET:
            continue
        ds[tag] = elem
        changes.append(Change((), tag, Action.D))
    if changes:
        changes += adopt_character_set(ds)
    return changes


def context_params(ctx: EventContext) -> dict[str, str]:
    """The stylesheet parameters dcm4chee-arc passes."""
    return {
        "SendingApplicationEntityTitle": ctx.calling_ae,
        "ReceivingApplicationEntityTitle": ctx.called_ae,
        "SendingHostname": ctx.sending_hostname,
        "ReceivingHostname": ctx.receiving_hostname,
    }


class XsltAction:
    """The action of ``xslt:``."""

    def __init__(self, uri: str, stylesheet: Stylesheet, keywords: bool) -> None:
        self.uri = uri
        self.stylesheet = stylesheet
        self.keywords = keywords

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Transform and merge back."""
        new = transform(ds, self.stylesheet, self.keywords, context_params(ctx), "xslt")
        changes = merge_result(ds, new)
        log.debug("xslt: %d attributes from the stylesheet", len(changes))
        return changes


def _xslt(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    unknown = sorted(set(params) - {"xsl-no-keyword"})
    if unknown:
        raise ValueError(
            f"xslt: unknown parameter {', '.join(unknown)}; it takes xsl-no-keyword=true|false"
        )
    keywords = not parse_flag("xslt", params, "xsl-no-keyword")
    return XsltAction(spec.strip(), load_stylesheet("xslt", spec, env), keywords)


register_scheme("xslt", _xslt)
