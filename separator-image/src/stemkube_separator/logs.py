"""Structured logs: one JSON object per line on stderr, which cluster log collectors parse."""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# LogRecord attributes that are plumbing, not data worth a field of their own.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, job: str | None) -> None:
        super().__init__()
        self.job = job

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        if self.job:
            entry["job"] = self.job
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(job: str | None, stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Send every logger (ours, Demucs's, the libraries') through the JSON formatter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(job))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty HTTP libraries would otherwise log every request at INFO/DEBUG.
    for name in ("urllib3", "kubernetes", "httpx", "huggingface_hub", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
