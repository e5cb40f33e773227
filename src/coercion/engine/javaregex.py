"""Java regular expressions, as rule conditions are written, compiled with Python's ``re``.

Conditions follow dcm4chee-arc's, whose expressions are Java's
``java.util.regex``. Most of the syntax is shared; what Java spells
differently is translated here (POSIX classes such as ``\\p{Upper}``, ``\\Q...\\E``
quoting, ``(?<name>...)`` groups, ``\\z``, ``\\h``, ``\\v``), and what has no exact
Python counterpart (Unicode properties, class intersections, nested classes)
is refused with a message naming it, never silently read another way.

Java's ``\\d``, ``\\w``, ``\\s`` and ``\\b`` and its case-insensitive matching are
ASCII-only by default: the expression is compiled with :data:`re.ASCII` to
keep that meaning. Java's ``.`` stops at every line terminator, not only ``\\n``.
Possessive quantifiers and atomic groups need no translation (Python 3.11).
"""

from __future__ import annotations

import re

__all__ = ["compile_java"]

#: The POSIX and java.lang.Character classes of java.util.regex, as the content of a Python class.
_CLASSES = {
    "Lower": "a-z",
    "Upper": "A-Z",
    "ASCII": "\\x00-\\x7f",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "Punct": "!-/:-@\\[-`{-~",
    "Graph": "!-~",
    "Print": " -~",
    "Blank": " \\t",
    "Cntrl": "\\x00-\\x1f\\x7f",
    "XDigit": "0-9a-fA-F",
    "Space": " \\t\\n\\x0b\\f\\r",
    "javaLowerCase": "a-z",
    "javaUpperCase": "A-Z",
    "javaWhitespace": " \\t\\n\\x0b\\f\\r\\x1c-\\x1f",
}
#: Escapes whose Java meaning Python spells differently (as the content of a Python class).
_ESCAPE_CLASSES = {
    "h": " \\t\\xa0\\u1680\\u180e\\u2000-\\u200a\\u202f\\u205f\\u3000",
    "v": "\\n\\x0b\\f\\r\\x85\\u2028\\u2029",
}
#: Java's ``.`` without DOTALL: anything but a line terminator.
_DOT = "[^\\n\\r\\x85\\u2028\\u2029]"
_NAMED_GROUP = re.compile(r"\(\?<([A-Za-z][A-Za-z0-9]*)>")
_BACK_REFERENCE = re.compile(r"\\k<([A-Za-z][A-Za-z0-9]*)>")
_PROPERTY = re.compile(r"\\([pP])(\{[^}]*\}|[A-Za-z])")
_OCTAL = re.compile(r"\\0([0-3][0-7]{2}|[0-7]{1,2})")
_HEX = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def compile_java(source: str) -> re.Pattern[str]:
    """Compile the Java regular expression *source*; ValueError says what cannot be carried over."""
    translated = _translate(source)
    try:
        return re.compile(translated, re.ASCII)
    except (re.error, ValueError) as exc:  # ValueError: flags Python cannot combine
        raise ValueError(f"invalid regular expression ({exc})") from None


def _translate(source: str) -> str:
    out: list[str] = []
    depth = 0  # inside a character class when > 0
    index = 0
    while index < len(source):
        char = source[index]
        if char == "\\":
            text, index = _escape(source, index, depth > 0)
            out.append(text)
            continue
        if depth:
            if char == "[":
                raise ValueError("a class inside a class ([a[b]]) has no Python counterpart")
            if source.startswith("&&", index):
                raise ValueError("class intersection (&&) has no Python counterpart")
            if char == "]":
                depth = 0
        elif char == "[":
            depth = 1
            out.append(char)
            index += 1
            # a leading ^ and a ] right after it are literal members, as in Java
            if source.startswith("^", index):
                out.append("^")
                index += 1
            if source.startswith("]", index):
                out.append("\\]")
                index += 1
            continue
        elif char == ".":
            out.append(_DOT)
            index += 1
            continue
        elif char == "(":
            named = _NAMED_GROUP.match(source, index)
            if named:
                out.append(f"(?P<{named[1]}>")
                index = named.end()
                continue
        out.append(char)
        index += 1
    return "".join(out)


def _escape(source: str, index: int, in_class: bool) -> tuple[str, int]:
    """The Python spelling of the escape at *index*, and the index after it."""
    if index + 1 >= len(source):
        raise ValueError("the expression ends with a lone backslash")
    letter = source[index + 1]
    if letter == "Q":
        end = source.find("\\E", index + 2)
        literal = source[index + 2 :] if end < 0 else source[index + 2 : end]
        return re.escape(literal), len(source) if end < 0 else end + 2
    prop = _PROPERTY.match(source, index)
    if prop:
        name = prop[2].strip("{}").removeprefix("Is")
        content = _CLASSES.get(name)
        if content is None:
            raise ValueError(
                f"\\{prop[1]}{prop[2]}: no Python counterpart; use a character class such as [A-Z]"
            )
        negate = prop[1] == "P"
        if in_class and negate:
            raise ValueError(f"\\P{prop[2]} inside a class has no Python counterpart")
        return (content if in_class else f"[{'^' if negate else ''}{content}]"), prop.end()
    if letter in _ESCAPE_CLASSES:
        content = _ESCAPE_CLASSES[letter]
        return (content if in_class else f"[{content}]"), index + 2
    if letter in "HV":
        content = _ESCAPE_CLASSES[letter.lower()]
        if in_class:
            raise ValueError(f"\\{letter} inside a class has no Python counterpart")
        return f"[^{content}]", index + 2
    reference = _BACK_REFERENCE.match(source, index)
    if reference:
        return f"(?P={reference[1]})", reference.end()
    hexa = _HEX.match(source, index)
    if hexa:
        return re.escape(chr(int(hexa[1], 16))), hexa.end()
    octal = _OCTAL.match(source, index)
    if octal:  # Java's \0n, \0nn, \0mnn (Python reads \0 with at most two digits)
        return re.escape(chr(int(octal[1], 8))), octal.end()
    if letter == "z":
        return "\\Z", index + 2
    if letter == "Z":
        return "(?=(?:\\r\\n|[\\n\\r\\x85\\u2028\\u2029])?\\Z)", index + 2
    if letter == "e":
        return "\\x1b", index + 2
    if letter in "GRXNck":
        raise ValueError(f"\\{letter}: no Python counterpart")
    return source[index : index + 2], index + 2
