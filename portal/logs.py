"""Log lines: one line per event, whatever the event (a traceback included), so the journal
and whatever reads it later keep each event whole.

`LIFEBOAT_LOG_FORMAT=json` (production, deploy/lifeboat.env.example) writes each event as a
JSON object: time, level, logger, message, the process, and `exc` with the traceback when
there is one. The default is the same as plain text on one line, tracebacks folded with `⏎`.
"""

import json
import logging
from datetime import UTC, datetime
from typing import Any


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    return formatter.formatException(record.exc_info) if record.exc_info else ""


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        exc = _exception(self, record)
        if exc:
            event["exc"] = exc
        return json.dumps(event, ensure_ascii=False, default=str)


class OneLine(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        exc = _exception(self, record)
        text = f"{line} {exc}" if exc else line
        return text.replace("\n", " ⏎ ")
