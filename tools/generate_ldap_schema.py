#!/usr/bin/env python3
"""Generate ``ldif/00-dicom-schema.ldif`` from the DICOM LDAP schema of PS3.15 Annex H.

Input (``--source``, default ``standard/ps3.15/dicom-ldap-schema.schema`` in the
repository): the standard's schema text in OpenLDAP ``slapd.conf`` syntax,
``attributetype ( ... )`` and ``objectclass ( ... )`` definitions with ``#``
comments.

Output: one OpenLDAP ``cn=config`` schema entry, ``cn=dicom,cn=schema,cn=config``,
with one ``olcAttributeTypes`` / ``olcObjectClasses`` value per definition. Each
value is the definition re-tokenised with whitespace collapsed to single spaces
(inside quoted descriptions too), and lines are folded per RFC 2849.

Changes to the standard text, made only where slapd refuses it and written into
the header of the output:

* **Duplicate OIDs.** slapd refuses a second definition with an OID already in
  use. The first definition keeps the standard OID; each later one gets
  ``PROJECT_ARC.1.<kind>.<last arc of its standard OID>`` (kind 1 for attribute
  types, 2 for object classes). The standard gives ``1.2.840.10008.15.0.3.31``
  to both ``dicomSupportedCharacterSet`` and ``dicomInstitutionDepartmentType``.
* **Matching rules that do not fit the syntax.** slapd 2.5 refuses
  ``EQUALITY caseIgnoreMatch`` on the IA5 String syntax
  (``1.3.6.1.4.1.1466.115.121.1.26``: "inappropriate matching rule"); it becomes
  ``caseIgnoreIA5Match``, which compares the same way (case-insensitive) on that
  syntax. ``SUBSTR caseIgnoreSubstringsMatch`` on IA5 String is accepted by slapd
  and so stays as the standard has it. ``RULE_REPLACEMENTS`` lists exactly the
  combinations slapd refuses.

Run with ``--check`` to fail when the committed LDIF differs from what the
source gives.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT / "standard" / "ps3.15" / "dicom-ldap-schema.schema"
OUTPUT = ROOT / "ldif" / "00-dicom-schema.ldif"

#: The project's own OID arc (a UUID-derived ``2.25`` OID, ITU-T X.667).
PROJECT_ARC = "2.25.329800735698586629295641978511506172918"

#: The sub-arc of PROJECT_ARC that replacement OIDs use, per kind of definition.
REPLACEMENT_KIND_ARC = {"attributetype": 1, "objectclass": 2}

#: The LDIF attribute that holds each kind of definition in ``cn=config``.
CONFIG_ATTRIBUTE = {"attributetype": "olcAttributeTypes", "objectclass": "olcObjectClasses"}

SCHEMA_DN = "cn=dicom,cn=schema,cn=config"
SCHEMA_CN = "dicom"

#: The IA5 String syntax (RFC 4517, section 3.3.15).
IA5_SYNTAX = "1.3.6.1.4.1.1466.115.121.1.26"

#: Per syntax OID: matching rule slapd refuses on it -> rule with the same semantics
#: that slapd accepts. Found by loading the standard text into slapd 2.5; only
#: refused combinations belong here.
RULE_REPLACEMENTS: dict[str, dict[str, str]] = {
    IA5_SYNTAX: {"caseIgnoreMatch": "caseIgnoreIA5Match"},
}

#: The keywords of an attribute type that name a matching rule.
RULE_KEYWORDS = ("EQUALITY", "ORDERING", "SUBSTR")

#: RFC 2849 recommends lines of at most 76 characters.
LINE_WIDTH = 76

_TOKEN_RE = re.compile(r"'(?:[^'\\]|\\.)*'|[()$]|[^\s()$']+|'")


class SchemaSourceError(Exception):
    """The source text cannot be converted; the message names the file and line."""


@dataclass
class Definition:
    """One ``attributetype`` or ``objectclass`` of the source, as tokens."""

    kind: str
    tokens: list[str]
    line: int
    #: Human-readable notes on what was changed and why, for the LDIF header.
    changes: list[str] = field(default_factory=list)

    @property
    def oid(self) -> str:
        """The numeric OID, the first token after the opening parenthesis."""
        return self.tokens[1]

    @property
    def names(self) -> list[str]:
        """The NAME values, without quotes (one or a parenthesised list)."""
        index = self._keyword_index("NAME")
        if index is None:
            return []
        following = self.tokens[index + 1 :]
        if following and following[0] == "(":
            end = following.index(")")
            return [token.strip("'") for token in following[1:end]]
        return [following[0].strip("'")] if following else []

    @property
    def name(self) -> str:
        """The first NAME, or the OID when the definition has none."""
        names = self.names
        return names[0] if names else self.oid

    def value(self) -> str:
        """The definition as one line, tokens separated by single spaces."""
        return " ".join(self.tokens)

    def keyword_value(self, keyword: str) -> str | None:
        """The token that follows *keyword* (e.g. ``SYNTAX``), or None."""
        index = self._keyword_index(keyword)
        if index is None or index + 1 >= len(self.tokens):
            return None
        return self.tokens[index + 1]

    def replace_keyword_value(self, keyword: str, value: str) -> None:
        """Set the token that follows *keyword*, which must be present."""
        index = self._keyword_index(keyword)
        if index is None:
            raise KeyError(keyword)
        self.tokens[index + 1] = value

    def _keyword_index(self, keyword: str) -> int | None:
        # Keywords are never quoted, so a bare token equal to the keyword is one.
        for index, token in enumerate(self.tokens):
            if token.upper() == keyword:
                return index
        return None


def _normalise(token: str) -> str:
    """Collapse whitespace runs inside a quoted string to single spaces."""
    if token.startswith("'") and len(token) > 1:
        return "'" + " ".join(token[1:-1].split()) + "'"
    return token


def _strip_comments(text: str) -> str:
    """Blank out ``#`` comment lines, keeping line numbers for messages."""
    return "\n".join("" if line.lstrip().startswith("#") else line for line in text.split("\n"))


def parse_schema(text: str, origin: str) -> list[Definition]:
    """Parse slapd.conf schema text into its definitions, in source order.

    Raises SchemaSourceError for anything that is not a complete
    ``attributetype ( ... )`` or ``objectclass ( ... )`` (``objectidentifier``
    macros are not supported: the standard text uses none).
    """
    body = _strip_comments(text)
    definitions: list[Definition] = []
    tokens: Iterator[re.Match[str]] = _TOKEN_RE.finditer(body)
    for match in tokens:
        line = body.count("\n", 0, match.start()) + 1
        keyword = match.group().lower()
        if keyword not in CONFIG_ATTRIBUTE:
            raise SchemaSourceError(
                f"{origin}:{line}: unexpected {match.group()!r}; "
                "only attributetype and objectclass definitions are supported"
            )
        collected: list[str] = []
        depth = 0
        for inner in tokens:
            token = inner.group()
            if token == "'":
                raise SchemaSourceError(f"{origin}:{line}: unterminated quoted string")
            if not collected and token != "(":
                raise SchemaSourceError(f"{origin}:{line}: {keyword} must be followed by '('")
            collected.append(_normalise(token))
            depth += {"(": 1, ")": -1}.get(token, 0)
            if depth == 0:
                break
        if depth != 0 or len(collected) < 3:
            raise SchemaSourceError(f"{origin}:{line}: {keyword} is not closed by ')'")
        if not re.fullmatch(r"\d+(?:\.\d+)+", collected[1]):
            raise SchemaSourceError(f"{origin}:{line}: {collected[1]!r} is not a numeric OID")
        definitions.append(Definition(keyword, collected, line))
    return definitions


def count_source_definitions(text: str) -> dict[str, int]:
    """Count the definition keywords of the source, independently of the parser."""
    body = _strip_comments(text)
    return {
        kind: len(re.findall(rf"^\s*{kind}\b", body, re.IGNORECASE | re.MULTILINE))
        for kind in CONFIG_ATTRIBUTE
    }


def replace_duplicate_oids(definitions: list[Definition], origin: str) -> None:
    """Give every definition whose OID is already used a replacement OID.

    The first definition with an OID keeps it. A later one gets
    ``PROJECT_ARC.1.<kind arc>.<last arc of the standard OID>``; a replacement
    that is itself taken is an error, not something to guess around.
    """
    seen: dict[str, Definition] = {}
    for definition in definitions:
        first = seen.get(definition.oid)
        if first is None:
            seen[definition.oid] = definition
            continue
        original = definition.oid
        replacement = (
            f"{PROJECT_ARC}.1.{REPLACEMENT_KIND_ARC[definition.kind]}.{original.rsplit('.', 1)[1]}"
        )
        if replacement in seen:
            raise SchemaSourceError(
                f"{origin}:{definition.line}: {definition.name}: duplicate OID {original}, "
                f"and the replacement {replacement} is taken by {seen[replacement].name}"
            )
        definition.tokens[1] = replacement
        seen[replacement] = definition
        definition.changes.append(
            f"OID {original} -> {replacement}: the standard gives {original} to "
            f"{first.name} as well, and slapd refuses duplicate OIDs; {first.name} keeps "
            "it and this one moves to the project's arc. Other implementations may "
            "assign it a different OID."
        )


def fix_matching_rules(definitions: list[Definition]) -> None:
    """Replace matching rules slapd refuses on an attribute's syntax (RULE_REPLACEMENTS)."""
    for definition in definitions:
        if definition.kind != "attributetype":
            continue
        syntax = definition.keyword_value("SYNTAX")
        if syntax is None:
            continue
        # A syntax may carry a length bound, e.g. 1.3.6.1.4.1.1466.115.121.1.15{64}.
        replacements = RULE_REPLACEMENTS.get(syntax.split("{", 1)[0], {})
        for keyword in RULE_KEYWORDS:
            rule = definition.keyword_value(keyword)
            if rule is None or rule not in replacements:
                continue
            definition.replace_keyword_value(keyword, replacements[rule])
            definition.changes.append(
                f"{keyword} {rule} -> {replacements[rule]}: slapd refuses {rule} on "
                f'its syntax {syntax} ("inappropriate matching rule"); '
                f"{replacements[rule]} matches the same way on that syntax."
            )


def check_unique_names(definitions: list[Definition], origin: str) -> None:
    """Fail on a NAME used twice; unlike an OID there is no safe replacement."""
    seen: set[str] = set()
    for definition in definitions:
        for name in definition.names:
            if name.lower() in seen:
                raise SchemaSourceError(f"{origin}:{definition.line}: duplicate NAME {name!r}")
            seen.add(name.lower())


def fold(line: str, width: int = LINE_WIDTH) -> list[str]:
    """Fold one LDIF line per RFC 2849 into lines of at most *width* characters.

    Breaks go before a space where possible, so a continuation line starts with
    the fold marker (one space) followed by the space of the text; unfolding
    (dropping newline plus one space) gives back the line exactly.
    """
    out: list[str] = []
    rest = line
    limit = width
    while len(rest) > limit:
        cut = rest.rfind(" ", 1, limit + 1)
        if cut <= 0:
            cut = limit
        out.append(rest[:cut])
        rest = rest[cut:]
        limit = width - 1
    out.append(rest)
    return [out[0], *(" " + part for part in out[1:])]


def unfold(text: str) -> list[str]:
    """Unfold RFC 2849 LDIF text into logical lines, dropping comment lines."""
    lines: list[str] = []
    for raw in text.split("\n"):
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        else:
            lines.append(raw)
    return [line for line in lines if not line.startswith("#")]


def _header(source: Path, definitions: list[Definition]) -> list[str]:
    """The comment block at the top of the LDIF: origin, how to regenerate, changes."""
    counts = {kind: sum(d.kind == kind for d in definitions) for kind in CONFIG_ATTRIBUTE}
    paragraphs = [
        "GENERATED by tools/generate_ldap_schema.py from "
        f"{source.parent.name}/{source.name}, the LDAP schema of the DICOM "
        "Configuration Management Profile (PS3.15 Annex H). Do not edit by hand; "
        "regenerate with:",
        "    python tools/generate_ldap_schema.py",
        f"{counts['attributetype']} attribute types and {counts['objectclass']} object "
        "classes, in source order, whitespace collapsed to single spaces. To add them "
        "to a running slapd:",
        f"    ldapadd -Y EXTERNAL -H ldapi:/// -f {OUTPUT.name}",
        "Changes to the standard text, each because slapd refuses it as written:",
    ]
    lines: list[str] = []
    for paragraph in paragraphs:
        if paragraph.startswith(" "):
            lines[-1:] = [paragraph, ""]
            continue
        lines.extend([*textwrap.wrap(paragraph, width=LINE_WIDTH - 2, break_on_hyphens=False), ""])
    lines.pop()
    changes = [f"- {d.name}: {change}" for d in definitions for change in d.changes]
    for change in changes or ["none."]:
        lines.extend(
            textwrap.wrap(
                change, width=LINE_WIDTH - 2, subsequent_indent="  ", break_on_hyphens=False
            )
        )
    return [f"# {line}".rstrip() for line in lines]


def _check_value(definition: Definition, origin: str) -> str:
    value = definition.value()
    # An RFC 2849 SAFE-STRING: printable ASCII, not starting with space, ':' or '<'.
    if not value.isascii() or not value.isprintable() or value[0] in " :<":
        raise SchemaSourceError(
            f"{origin}:{definition.line}: {definition.name}: not a safe LDIF string; "
            "base64 values are not supported"
        )
    return value


def render(source: Path) -> str:
    """Return the LDIF text for the schema in *source*.

    Raises SchemaSourceError when the source cannot be parsed, or when the
    output would not hold exactly the definitions of the source.
    """
    text = source.read_text(encoding="utf-8")
    origin = str(source)
    definitions = parse_schema(text, origin)
    check_unique_names(definitions, origin)
    replace_duplicate_oids(definitions, origin)
    fix_matching_rules(definitions)
    entry = [f"dn: {SCHEMA_DN}", "objectClass: olcSchemaConfig", f"cn: {SCHEMA_CN}"]
    for definition in definitions:
        value = _check_value(definition, origin)
        entry.extend(fold(f"{CONFIG_ATTRIBUTE[definition.kind]}: {value}"))
    ldif = "\n".join([*_header(source, definitions), *entry, ""])
    _verify(ldif, text, origin)
    return ldif


def _verify(ldif: str, source_text: str, origin: str) -> None:
    """Fail unless the LDIF has one value per source definition and unique OIDs."""
    expected = count_source_definitions(source_text)
    lines = unfold(ldif)
    for kind, attribute in CONFIG_ATTRIBUTE.items():
        found = sum(line.startswith(f"{attribute}: ") for line in lines)
        if found != expected[kind]:
            raise SchemaSourceError(
                f"{origin}: {expected[kind]} {kind} definitions but {found} {attribute} values "
                "in the output; the parser lost or invented definitions"
            )
    oids = [
        line.split(" ", 3)[2] for line in lines if line.startswith(tuple(CONFIG_ATTRIBUTE.values()))
    ]
    duplicates = sorted({oid for oid in oids if oids.count(oid) > 1})
    if duplicates:
        raise SchemaSourceError(f"{origin}: OIDs still used twice: {', '.join(duplicates)}")


def check(source: Path = DEFAULT_SOURCE, output: Path = OUTPUT) -> str | None:
    """Return a message when *output* is not what *source* gives, else None."""
    current = output.read_text(encoding="utf-8") if output.exists() else ""
    if current != render(source):
        return f"{output}: stale; run tools/generate_ldap_schema.py"
    return None


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the generated LDIF."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail if the output is stale")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problem = check(args.source, args.output)
            if problem is not None:
                print(problem, file=sys.stderr)
                return 1
            return 0
        text = render(args.source)
    except (OSError, SchemaSourceError) as exc:
        print(f"generate_ldap_schema: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"{args.output}: {text.count(chr(10))} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
