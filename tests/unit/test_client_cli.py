"""The ``stemkube`` client's own logic: argument handling, exit codes, file names, the API key
and the API's refusals."""

import functools
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from stemkube_client import cli


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ('attachment; filename="song_stems.zip"', "song_stems.zip"),
        ("attachment; filename*=UTF-8''Caf%C3%A9_stems.zip", "Café_stems.zip"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename=".."', None),
        ("attachment", None),
        (None, None),
    ],
)
def test_download_name_from_the_server(header: str | None, name: str | None) -> None:
    headers = {"content-disposition": header} if header else {}
    assert cli._filename_from(httpx.Response(200, headers=headers)) == name


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["separate"],
        ["separate", "a.mp3", "--stems=vocals", "--two-stems=drums"],
        ["separate", "a.mp3", "--format=ogg"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == cli.EXIT_USAGE


def test_a_missing_song_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-q", "separate", "/no/such/song.mp3"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip() == "stemkube: no such file: /no/such/song.mp3"


def test_api_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMKUBE_API_URL", "http://stems.example:9000")
    assert cli._parser().parse_args(["list"]).api_url == "http://stems.example:9000"
    monkeypatch.delenv("STEMKUBE_API_URL")
    assert cli._parser().parse_args(["list"]).api_url == "http://localhost:8000"


# -- API keys and the API's refusals, against a stand-in server (httpx.MockTransport) --------

KEY = "stk_0123456789ab_" + "s" * 43
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx.Request]]:
    """Routes the client's requests to ``handler``; returns the requests it got."""
    monkeypatch.delenv(cli.KEY_ENV, raising=False)

    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        transport = httpx.MockTransport(record)
        monkeypatch.setattr(cli, "Api", functools.partial(cli.Api, transport=transport))
        return seen

    return install


def no_jobs(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"jobs": [], "next_cursor": None})


def test_the_key_goes_as_a_bearer_token(
    serve: Callable[[Handler], list[httpx.Request]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = serve(no_jobs)
    assert cli.main(["--api-key", KEY, "list"]) == cli.EXIT_OK
    monkeypatch.setenv(cli.KEY_ENV, f"  {KEY}\n")  # as KEY=$(cat file) may leave it
    assert cli.main(["list"]) == cli.EXIT_OK
    assert cli.main(["--api-key", "stk_other", "list"]) == cli.EXIT_OK  # the flag wins
    monkeypatch.setenv(cli.KEY_ENV, "")
    assert cli.main(["list"]) == cli.EXIT_OK
    sent = [r.headers.get("authorization") for r in seen]
    assert sent == [f"Bearer {KEY}", f"Bearer {KEY}", "Bearer stk_other", None]
    assert all("x-api-key" not in r.headers for r in seen)
    assert KEY not in "".join(capsys.readouterr())


def test_the_key_is_not_in_the_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(cli.KEY_ENV, KEY)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "--api-key" in out
    assert "STEMKUBE_API_KEY" in out
    assert KEY not in out


@pytest.mark.parametrize("bad", ["stk_abc def", "stk_é", "stk_\x00x"])
def test_a_key_no_server_could_take_is_a_usage_error_that_does_not_repeat_it(
    serve: Callable[[Handler], list[httpx.Request]],
    capsys: pytest.CaptureFixture[str],
    bad: str,
) -> None:
    seen = serve(no_jobs)
    assert cli.main(["--api-key", bad, "list"]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert seen == []
    assert err.startswith("stemkube: the API key (--api-key or $STEMKUBE_API_KEY) has ")
    assert bad not in out + err


def refuse(status: int, detail: str, **headers: str) -> Handler:
    return lambda request: httpx.Response(status, json={"detail": detail}, headers=headers)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["list"],
            "stemkube: job list: HTTP 401: an API key is required: send it as 'Authorization: "
            "Bearer <key>' or 'X-API-Key' (give the API key with --api-key or "
            "$STEMKUBE_API_KEY)",
        ),
        (
            ["--api-key", KEY, "list"],
            "stemkube: job list: HTTP 401: an API key is required: send it as 'Authorization: "
            "Bearer <key>' or 'X-API-Key' (the key of --api-key or $STEMKUBE_API_KEY was "
            "refused)",
        ),
    ],
)
def test_a_401_says_the_servers_words_and_what_to_do(
    serve: Callable[[Handler], list[httpx.Request]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    detail = "an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key'"
    serve(refuse(401, detail, **{"WWW-Authenticate": 'Bearer realm="stemkube"'}))
    assert cli.main(argv) == cli.EXIT_SERVER
    out, err = capsys.readouterr()
    assert err.strip() == message
    assert KEY not in out + err


def test_a_403_says_the_servers_words(
    serve: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    seen = serve(refuse(403, "only admin keys may filter by tenant"))
    assert cli.main(["--api-key", KEY, "list", "--tenant", "acme"]) == cli.EXIT_SERVER
    assert seen[0].url.params["tenant"] == "acme"
    err = capsys.readouterr().err.strip()
    assert err == "stemkube: job list: HTTP 403: only admin keys may filter by tenant"


def test_a_429_says_the_servers_words_and_when_to_retry(
    serve: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    detail = "rate limit of key 'ci': 3 requests per minute; the next minute starts in 17 s"
    serve(refuse(429, detail, **{"Retry-After": "17"}))
    assert cli.main(["--api-key", KEY, "status", "job-1"]) == cli.EXIT_SERVER
    assert capsys.readouterr().err.strip() == f"stemkube: job job-1: HTTP 429: {detail} " + (
        "(retry after 17 s)"
    )
    serve(refuse(429, "slow down"))  # no Retry-After: nothing made up
    assert cli.main(["--api-key", KEY, "status", "job-1"]) == cli.EXIT_SERVER
    assert capsys.readouterr().err.strip() == "stemkube: job job-1: HTTP 429: slow down"


def test_following_a_job_waits_out_the_rate_limit(
    serve: Callable[[Handler], list[httpx.Request]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answers = iter(
        [
            httpx.Response(200, json={"status": "processing", "progress": 40}),
            httpx.Response(429, json={"detail": "rate limit"}, headers={"Retry-After": "7"}),
            httpx.Response(200, json={"status": "completed", "progress": 100}),
        ]
    )
    serve(lambda request: next(answers))
    slept: list[float] = []
    monkeypatch.setattr("stemkube_client.cli.time.sleep", slept.append)
    api = cli.Api("http://api.test", KEY)
    status = cli.follow(api, "job-1", cli.Progress(quiet=False), interval=0.5)
    assert status["status"] == "completed"
    assert slept == [0.5, 7]
    err = capsys.readouterr().err
    assert "job job-1: HTTP 429: rate limit; polling again in 7 s" in err
    assert KEY not in err


def test_the_key_does_not_follow_a_redirect_to_another_host(
    serve: Callable[[Handler], list[httpx.Request]], tmp_path: Path
) -> None:
    """A presigned download redirects to the object store: it gets no key."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "localhost":
            return httpx.Response(307, headers={"Location": "http://s3.test/b/r.zip?sig=1"})
        return httpx.Response(
            200, content=b"PK", headers={"content-disposition": 'attachment; filename="r.zip"'}
        )

    seen = serve(handler)
    assert cli.main(["-q", "--api-key", KEY, "download", "job-1", "-o", str(tmp_path)]) == 0
    assert [(r.url.host, r.headers.get("authorization")) for r in seen] == [
        ("localhost", f"Bearer {KEY}"),
        ("s3.test", None),
    ]
    assert (tmp_path / "r.zip").read_bytes() == b"PK"


def test_an_admins_list_shows_the_tenants(
    serve: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    job = {
        "job_id": "j1",
        "status": "completed",
        "progress": 100,
        "created_at": "2026-01-01T00:00:00+00:00",
        "filename": "song.mp3",
    }
    serve(lambda r: httpx.Response(200, json={"jobs": [{**job, "tenant": "acme"}]}))
    assert cli.main(["--api-key", KEY, "list"]) == cli.EXIT_OK
    head, row = capsys.readouterr().out.splitlines()
    assert head.split() == ["JOB", "ID", "STATUS", "PROGRESS", "CREATED", "TENANT", "FILENAME"]
    assert row.split()[-2:] == ["acme", "song.mp3"]
    serve(lambda r: httpx.Response(200, json={"jobs": [{**job, "tenant": None}]}))
    assert cli.main(["--api-key", KEY, "list"]) == cli.EXIT_OK
    assert "TENANT" not in capsys.readouterr().out
