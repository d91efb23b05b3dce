"""Logging set-up: one format, the access log is crmgate's own, and key-shaped text is masked.

Secrets are kept out of log calls by construction (only key hints and ids are logged); the
redacting filter is a second line of defence for text that comes from elsewhere, such as an
exception message quoting a header.
"""

from __future__ import annotations

import logging
import logging.config
import re
from typing import Any

_KEY_SHAPED = re.compile(r"(?<![0-9A-Za-z])(cg[a-z])_[0-9A-Za-z]{20,}")


def redact(text: str) -> str:
    return _KEY_SHAPED.sub(r"\1_<redacted>", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # The whole chain is formatted (causes and contexts included) and masked.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def configure(level: str = "info") -> None:
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactingFilter}},
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # uvicorn's access log prints query strings; crmgate writes its own (crmgate.access).
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn": {"handlers": [], "propagate": True},
        },
    }
    logging.config.dictConfig(config)
