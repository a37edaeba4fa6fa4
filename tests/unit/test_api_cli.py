"""The two command lines' own logic: argument handling, exit codes, file names."""

import httpx
import pytest

from stemkube_api import cli, client_cli


def test_local_mode_says_it_arrives_with_its_issue(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--local"]) == 2
    assert 'local mode arrives with the issue "Local mode"' in capsys.readouterr().err


def test_server_options() -> None:
    args = cli._parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    args = cli._parser().parse_args(["--host", "0.0.0.0", "--port", "9000"])
    assert (args.host, args.port) == ("0.0.0.0", 9000)


def test_bad_server_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAX_FILE_SIZE", "huge")
    assert cli.main([]) == 2
    assert "MAX_FILE_SIZE" in capsys.readouterr().err


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
    assert client_cli._filename_from(httpx.Response(200, headers=headers)) == name


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
        client_cli.main(argv)
    assert caught.value.code == client_cli.EXIT_USAGE


def test_a_missing_song_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert client_cli.main(["-q", "separate", "/no/such/song.mp3"]) == client_cli.EXIT_USAGE
    assert capsys.readouterr().err.strip() == "stemkube: no such file: /no/such/song.mp3"


def test_api_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMKUBE_API_URL", "http://stems.example:9000")
    assert client_cli._parser().parse_args(["list"]).api_url == "http://stems.example:9000"
    monkeypatch.delenv("STEMKUBE_API_URL")
    assert client_cli._parser().parse_args(["list"]).api_url == "http://localhost:8000"
