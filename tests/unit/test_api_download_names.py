"""The names a download is saved under: ``curl -O -J`` takes the ASCII ``filename`` of
Content-Disposition, browsers the exact ``filename*``."""

import urllib.parse

import pytest
from fastapi.testclient import TestClient

from stemkube_api.jobs import ascii_filename, content_disposition
from tests.unit.fakes import MemoryStore
from tests.unit.test_api_app import TenantBackend, client, parts, upload  # noqa: F401  (fixtures)


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("Beyoncé \u2013 Déjà Vu", "Beyonce - Deja Vu"),  # accents dropped, the en dash a hyphen
        ("Motörhead \u2014 Ace of Spades", "Motorhead - Ace of Spades"),
        ("Don\u2019t Stop \u201cMe\u201d", "Don't Stop 'Me'"),
        ("Straße Ærø Łódź", "Strasse AEro Lodz"),
        ('say "hi"\\now', "say _hi__now"),  # no quote or backslash to escape
        ("AC/DC; live", "AC_DC_ live"),
        ("tab\there\nx\x07bell\x7f", "tab here xbell"),  # whitespace a space, controls gone
        ("日本 Remix", "Remix"),  # no ASCII form: left out
        ("日本", ""),  # nothing left: the caller names it otherwise
        ("a\u00a0\u2003b\u2026c. ", "a b...c"),
    ],
)
def test_ascii_filename_transliterates(name: str, plain: str) -> None:
    assert ascii_filename(name) == plain


def test_content_disposition_takes_the_callers_ascii_name() -> None:
    assert content_disposition("日本_stems.zip", "job-1_stems.zip") == (
        "attachment; filename=\"job-1_stems.zip\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC_stems.zip"
    )
    assert content_disposition("song_stems.zip", "song_stems.zip") == (
        'attachment; filename="song_stems.zip"'
    )


def names(header: str) -> tuple[str, str | None]:
    """The header's (filename, decoded filename*)."""
    params = dict(part.strip().split("=", 1) for part in header.split(";")[1:] if "=" in part)
    exact = params.get("filename*")
    decoded = urllib.parse.unquote(exact.removeprefix("UTF-8''")) if exact else None
    return params["filename"], decoded


@pytest.mark.parametrize(
    ("song", "zip_name", "stem_name"),
    [
        (
            "Beyoncé \u2013 Déjà Vu.mp3",
            "Beyonce - Deja Vu_stems.zip",
            "Beyonce - Deja Vu_vocals.mp3",
        ),
        ("日本の歌.flac", "{job}_stems.zip", "{job}_vocals.mp3"),
        ("日本 Remix.wav", "Remix_stems.zip", "Remix_vocals.mp3"),
        ('a "quoted"\\name\x01.mp3', "a _quoted__name_stems.zip", "a _quoted__name_vocals.mp3"),
        ("my.song.mp3", "my.song_stems.zip", "my.song_vocals.mp3"),
        ("song.mp3", "song_stems.zip", "song_vocals.mp3"),
    ],
)
def test_downloads_have_an_ascii_name_of_the_song_and_its_exact_name(
    client: TestClient,  # noqa: F811
    parts: tuple[TenantBackend, MemoryStore],  # noqa: F811
    song: str,
    zip_name: str,
    stem_name: str,
) -> None:
    backend, store = parts
    made = upload(client)
    assert made.status_code == 200, made.text
    job_id = made.json()["job_id"]
    # The name as a job holds it (what a client sends is another test's: test_api_form.py).
    backend.finish(job_id, store, filename=song)
    title = song.rpartition(".")[0]
    for path, plain, exact in [
        (f"/download/{job_id}", zip_name, f"{title}_stems.zip"),
        (f"/download/{job_id}/vocals", stem_name, f"{title}_vocals.mp3"),
    ]:
        response = client.get(path)
        assert response.status_code == 200
        header = response.headers["content-disposition"]
        assert header.isascii()
        expected_plain = plain.format(job=job_id)
        assert names(header) == (
            f'"{expected_plain}"',
            exact if exact != expected_plain else None,
        )
