"""The operator's log: Kopf's line for each run of an event handler that only queues a sync
is dropped, and nothing else is."""

import logging

import kopf

from stemkube_operator.cli import _QuietQueueing


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, None, None)


def test_the_queueing_handlers_lines_go_and_the_rest_stay() -> None:
    quiet = _QuietQueueing()
    # The names are those of handlers.py's event handlers (cli imports it), all of them.
    watching = kopf.get_default_registry()._watching.get_all_handlers()
    assert sorted(h.id for h in watching) == sorted(_QuietQueueing.HANDLERS)
    for name in _QuietQueueing.HANDLERS:
        assert not quiet.filter(record(f"Handler {name!r} succeeded."))
    assert quiet.filter(record("Handler 'on_delete' succeeded."))
    assert quiet.filter(record("Handler 'on_pod' failed with an exception. Will ignore."))
    assert quiet.filter(record("separation job ns/a is Completed (Completed): stems ready"))
