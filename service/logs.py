"""Log formatting of the server process: JSON lines (or text) with the request id of each record.

`logging_config(settings)` is the `logging.config.dictConfig` of the process (and of every
uvicorn worker): JSON lines or text, at the configured level; uvicorn's own access log is off,
because the access middleware's line replaces it. Request bodies are never logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import orjson

from service.context import current_request_id

if TYPE_CHECKING:
    from service.settings import Settings

#: Attributes a log call may pass in `extra=` that become fields of the JSON line.
EXTRA_FIELDS = ("method", "route", "path", "status", "duration_ms", "model", "client")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        for key in EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


class RequestIdFilter(logging.Filter):
    """Puts `request_id` on every record ("-" outside a request), for the text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = current_request_id() or "-"
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def logging_config(settings: Settings) -> dict[str, Any]:
    """`dictConfig` of the server process: one stderr handler in the configured format and level;
    uvicorn's loggers go through it, and its access log is switched off (ours replaces it)."""
    level = settings.log_level.upper()
    text = settings.log_format == "text"
    formatter: dict[str, Any] = (
        {"format": TEXT_FORMAT} if text else {"()": f"{__name__}.JsonFormatter"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                # The JSON formatter reads the id itself (null outside a request).
                "filters": ["request_id"] if text else [],
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
