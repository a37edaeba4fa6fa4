"""The ``stemkube`` client's own logic: argument handling, exit codes, file names."""

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
