"""Logging to stderr in the form journalctl reads best.

journald adds the time, host and unit, so lines carry none of them. Under
systemd (JOURNAL_STREAM set) each line starts with a syslog priority prefix
such as `<4>`, which journald turns into the entry's priority (so
`journalctl -p warning` works); on a terminal, warnings and errors are
prefixed with their level instead.
"""

from __future__ import annotations

import logging
import os
import sys

LEVELS = ("debug", "info", "warning", "error")
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _Formatter(logging.Formatter):
    def __init__(self, journal: bool):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if self.journal:
            prio = _PRIORITY.get(record.levelno, 6)
            return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # zeroconf logs every malformed packet of the LAN at warning level; ours
    # say what matters (one line per rejected record).
    logging.getLogger("zeroconf").setLevel(max(logging.ERROR, root.level))
    logging.getLogger("sh").setLevel(logging.WARNING)
