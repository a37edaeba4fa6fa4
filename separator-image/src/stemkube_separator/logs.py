"""Structured logs: one JSON object per line on stderr, which cluster log collectors parse."""

import contextlib
import importlib
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

# LogRecord attributes that are plumbing, not data worth a field of their own.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# A batch works on several members at once (one separating, the next one's song decoding in
# another thread): each thread's lines name the member that thread works for.
_thread = threading.local()
_UNSET = object()


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
        job = getattr(_thread, "job", _UNSET)
        job = self.job if job is _UNSET else job
        if job:
            entry["job"] = job
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
    _own_library_handlers()
    logging.captureWarnings(True)


# Libraries that give their logger a handler of their own when first imported, besides
# propagating to the root: each of their lines would appear twice, once as plain text.
_SELF_HANDLING = {"huggingface_hub": "huggingface_hub.utils.logging"}


def _own_library_handlers() -> None:
    """Make the root's JSON handler the only one of each such library (issue 19: every
    huggingface_hub warning of a Job's log was printed twice). The library's module that adds
    the handler is imported now (20 ms), so that it cannot add it later, when the model loads."""
    for name, module in _SELF_HANDLING.items():
        try:
            importlib.import_module(module)
        except ImportError:  # not installed: nothing to adopt
            continue
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True


def thread_job() -> str | None:
    """The job this thread's lines name, if it was set for the thread (``job``)."""
    job = getattr(_thread, "job", None)
    return job if isinstance(job, str) else None


@contextlib.contextmanager
def job(name: str | None) -> Iterator[None]:
    """This thread's lines name ``name`` (None: no job) instead of the process's job."""
    before = getattr(_thread, "job", _UNSET)
    _thread.job = name
    try:
        yield
    finally:
        if before is _UNSET:
            del _thread.job
        else:
            _thread.job = before


def inheriting_job() -> Callable[[], None] | None:
    """A thread pool's initializer that gives its threads the creating thread's job (None
    where that thread has none of its own: they use the process's, as it does)."""
    name = getattr(_thread, "job", _UNSET)
    if name is _UNSET:
        return None

    def initialize() -> None:
        _thread.job = name

    return initialize


def carrying_job(target: Callable[[], None]) -> Callable[[], None]:
    """``target`` to run in a new thread, naming the job of the thread that creates it."""
    name = getattr(_thread, "job", _UNSET)
    if name is _UNSET:
        return target

    def run() -> None:
        with job(name if isinstance(name, str) else None):
            target()

    return run
