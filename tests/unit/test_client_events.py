"""The ``stemkube`` client following a job through the server's event stream
(``GET /jobs/{job_id}/events``), and falling back to polling /status where there is none."""

import functools
import json
from collections.abc import Callable

import httpx
import pytest

from stemkube_client import cli
from stemkube_client.progress import Progress

Handler = Callable[[httpx.Request], httpx.Response]


def stream_of(*states: tuple[str, int], end: str | None = None) -> httpx.Response:
    body = "retry: 3000\n\n"
    for number, (word, percent) in enumerate(states, 1):
        data = json.dumps({"job_id": "job-1", "status": word, "progress": percent})
        body += f"id: {number}\nevent: status\ndata: {data}\n\n"
        body += ": ping\n\n"
    if end:
        body += f"event: {end}\ndata: {json.dumps({'detail': end})}\n\n"
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[str]]:
    """Routes the client's requests to ``handler``; returns the paths it got."""
    monkeypatch.setattr("stemkube_client.cli.time.sleep", lambda seconds: None)

    def install(handler: Handler) -> list[str]:
        seen: list[str] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.path)
            return handler(request)

        transport = httpx.MockTransport(record)
        monkeypatch.setattr(cli, "Api", functools.partial(cli.Api, transport=transport))
        return seen

    return install


def test_sse_events_parse_fields_and_skip_comments() -> None:
    lines = ["retry: 3000", "", ": ping", "", "id: 1", "event: status", "data: {}", ""]
    lines += ["data:a", "data: b", "", "event: deleted", "data: x"]
    assert list(cli.sse_events(iter(lines))) == [
        ("status", "{}"),
        ("message", "a\nb"),
        ("deleted", "x"),
    ]


def test_wait_follows_the_event_stream_without_polling(
    serve: Callable[[Handler], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    seen = serve(lambda request: stream_of(("pending", 0), ("processing", 40), ("completed", 100)))
    assert cli.main(["wait", "job-1"]) == cli.EXIT_OK
    assert seen == ["/jobs/job-1/events"]
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "job job-1: pending 0%",
        "job job-1: processing 40%",
        "job job-1: completed 100%",
    ]
    assert out.strip() == "job job-1 completed"


def test_a_reconnect_event_opens_a_new_stream(serve: Callable[[Handler], list[str]]) -> None:
    answers = iter([stream_of(("processing", 10), end="reconnect"), stream_of(("completed", 100))])
    seen = serve(lambda request: next(answers))
    assert cli.main(["-q", "wait", "job-1"]) == cli.EXIT_OK
    assert seen == ["/jobs/job-1/events"] * 2


def test_a_deleted_job_exits_4(
    serve: Callable[[Handler], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    serve(lambda request: stream_of(("processing", 10), end="deleted"))
    assert cli.main(["-q", "wait", "job-1"]) == cli.EXIT_NOT_FOUND
    assert capsys.readouterr().err.strip() == "stemkube: job job-1 was deleted"


def polling_server(events: httpx.Response | Exception) -> Handler:
    answers = iter([("processing", 50), ("completed", 100)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            if isinstance(events, Exception):
                raise events
            return events
        word, percent = next(answers)
        return httpx.Response(200, json={"status": word, "progress": percent})

    return handler


@pytest.mark.parametrize(
    "events",
    [
        httpx.Response(404, json={"detail": "Not Found"}),  # a server from before the stream
        httpx.Response(429, json={"detail": "too many streams"}, headers={"Retry-After": "5"}),
        httpx.Response(200, json={"status": "pending"}),  # not a stream
        httpx.ConnectError("refused"),
        stream_of(("processing", 10)),  # closed before the job ended
    ],
)
def test_no_stream_falls_back_to_polling(
    serve: Callable[[Handler], list[str]], events: httpx.Response | Exception
) -> None:
    seen = serve(polling_server(events))
    assert cli.main(["-q", "wait", "job-1"]) == cli.EXIT_OK
    assert seen == ["/jobs/job-1/events", "/status/job-1", "/status/job-1"]


def test_poll_flag_never_asks_for_the_stream(serve: Callable[[Handler], list[str]]) -> None:
    seen = serve(polling_server(stream_of(("completed", 100))))
    assert cli.main(["-q", "wait", "job-1", "--poll"]) == cli.EXIT_OK
    assert seen == ["/status/job-1", "/status/job-1"]


def test_a_refused_key_on_the_stream_is_the_usual_error(
    serve: Callable[[Handler], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    serve(lambda request: httpx.Response(401, json={"detail": "the API key is not valid"}))
    assert cli.main(["-q", "wait", "job-1"]) == cli.EXIT_SERVER
    assert "HTTP 401: the API key is not valid" in capsys.readouterr().err


def test_follow_with_events_reports_progress(serve: Callable[[Handler], list[str]]) -> None:
    serve(lambda request: stream_of(("processing", 30), ("failed", 30)))
    api = cli.Api("http://api.test")
    status = cli.follow(api, "job-1", Progress(quiet=True), 1.0, events=True)
    assert status["status"] == "failed"
