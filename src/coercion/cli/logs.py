"""The command line's logging: one stderr handler, timestamped lines, warnings routed through it.

Python warnings (pydicom's above all) would otherwise go straight to stderr,
past ``-q`` and past the rule that no log line holds an element value:
pydicom quotes values in them ("Unknown encoding '...'"). Here every warning
becomes a log record of ``coercion.warnings``; the text of a warning raised
inside pydicom, or of any warning that quotes something, is withheld (its
category and origin are logged at DEBUG instead). Log records of pydicom and
pynetdicom that quote something ("Non-conformant ... value '...'") are
withheld the same way: the line keeps the logger and the level, not the text.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from types import FrameType
from typing import TextIO

__all__ = ["configure_logging"]

#: Log line: UTC time to the millisecond, level, logger, message.
LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
_QUOTES = ("'", '"', "\u2018", "\u2019", "\u201c", "\u201d")

warnings_log = logging.getLogger("coercion.warnings")


def configure_logging(verbosity: int, worker: int = 0) -> None:
    """Log to stderr at *verbosity*'s level: -1 errors only, 0 warnings, 1 info, 2 debug.

    A *worker* of ``serve --workers N`` (1..N) is named after the time of each line.
    """
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    line = LOG_FORMAT.replace("Z ", f"Z [worker {worker}] ", 1) if worker else LOG_FORMAT
    formatter = logging.Formatter(line, DATE_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_withhold_quoted_library_records)
    # On the root logger, so that other libraries' records get the same timestamped format.
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))
    logging.getLogger("coercion").setLevel(level)
    # pydicom and pynetdicom may quote element values: keep them quiet.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    warnings.showwarning = _show_warning


def _withhold_quoted_library_records(record: logging.LogRecord) -> bool:
    """A handler filter: a pydicom or pynetdicom record that quotes something loses its text."""
    if record.name.split(".", 1)[0] in ("pydicom", "pynetdicom"):
        text = record.getMessage()
        if any(quote in text for quote in _QUOTES):
            record.msg = "message withheld: its text may quote an element value"
            record.args = ()
    return True


def _from_pydicom(frame: FrameType | None) -> bool:
    """Whether pydicom is issuing the warning being shown."""
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module == "pydicom" or module.startswith("pydicom."):
            return True
        frame = frame.f_back
    return False


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """warnings.showwarning: a log record, without the text when it may quote a value."""
    text = str(message)
    if _from_pydicom(sys._getframe(1)) or any(quote in text for quote in _QUOTES):
        warnings_log.debug(
            "%s from %s:%d withheld: its text may quote an element value",
            category.__name__,
            Path(filename).name,
            lineno,
        )
        return
    warnings_log.warning("%s: %s", category.__name__, text)
