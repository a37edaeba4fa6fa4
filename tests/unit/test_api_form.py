"""The streaming form parser on parts named the RFC 5987 way (``filename*=UTF-8''...``), and one
such upload through the app."""

from collections.abc import AsyncIterator

import anyio
import pytest
from fastapi.testclient import TestClient

from stemkube_api.form import (
    MAX_FIELD_BYTES,
    Event,
    Field,
    FileData,
    FileEnd,
    FileStart,
    extended_filename,
    read_form,
)
from tests.harness.audio import sine_wav
from tests.unit.test_api_app import client, parts  # noqa: F401  (fixtures)

BOUNDARY = b"XyZ"
SONG = sine_wav(0.5)  # longer than a form field may be: read as a field, it is refused
assert len(SONG) > MAX_FIELD_BYTES


def body(disposition: str, data: bytes = SONG) -> bytes:
    return (
        b"--XyZ\r\nContent-Disposition: "
        + disposition.encode("utf-8")
        + b"\r\nContent-Type: audio/wav\r\n\r\n"
        + data
        + b'\r\n--XyZ\r\nContent-Disposition: form-data; name="format"\r\n\r\nwav\r\n--XyZ--\r\n'
    )


def events(data: bytes, chunk: int = 1000) -> list[Event]:
    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(data), chunk):
            yield data[i : i + chunk]

    async def main() -> list[Event]:
        return [event async for event in read_form(stream(), BOUNDARY)]

    return anyio.run(main)


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        (
            "form-data; name=\"file\"; filename*=UTF-8''Beyonc%C3%A9%20%E2%80%93.wav",
            "Beyoncé \u2013.wav",
        ),
        ('form-data; name="file"; filename*="UTF-8\'\'a%20b.wav"', "a b.wav"),
        ("form-data; name=\"file\"; FILENAME*=utf-8'en'%E6%97%A5%E6%9C%AC.wav", "日本.wav"),
        ("form-data; name=\"file\"; filename*=iso-8859-1''caf%E9.wav", "café.wav"),
        ("form-data; name=\"file\"; filename*0*=UTF-8''caf%C3%A9; filename*1=.wav", "café.wav"),
        ("form-data; name=\"file\"; filename*=UTF-8''%FF.wav", "\ufffd.wav"),
        # Both: filename* is the exact name, filename its ASCII stand-in (RFC 6266).
        (
            'form-data; name="file"; filename="cafe.wav"; filename*=UTF-8\'\'caf%C3%A9.wav',
            "café.wav",
        ),
        (
            'form-data; filename*=UTF-8\'\'caf%C3%A9.wav; name="file"; filename="cafe.wav"',
            "café.wav",
        ),
        # The plain form alone, as before (raw UTF-8, as browsers send it).
        ('form-data; name="file"; filename="café.wav"', "café.wav"),
    ],
)
def test_a_part_with_filename_star_is_the_file_under_its_decoded_name(
    disposition: str, filename: str
) -> None:
    got = events(body(disposition))
    assert got[0] == FileStart("file", filename, "audio/wav")
    assert b"".join(e.data for e in got if isinstance(e, FileData)) == SONG
    assert got[-2:] == [FileEnd(), Field("format", "wav")]


def test_extended_filename_is_none_without_one() -> None:
    assert extended_filename(b'form-data; name="file"; filename="a.wav"') is None
    assert extended_filename(b'form-data; name="file"; filename="filename*=x"') is None
    assert extended_filename(b'form-data; name="file"') is None


SONG_NAME = "Beyoncé \u2013 Déjà Vu.wav"  # an en dash


def test_an_upload_with_only_filename_star_makes_a_job_named_by_it(client: TestClient) -> None:  # noqa: F811
    quoted = "Beyonc%C3%A9%20%E2%80%93%20D%C3%A9j%C3%A0%20Vu.wav"
    disposition = f"form-data; name=\"file\"; filename*=UTF-8''{quoted}"
    response = client.post(
        "/upload",
        content=body(disposition),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == SONG_NAME
    status = client.get(f"/status/{response.json()['job_id']}").json()
    assert (status["filename"], status["format"]) == (SONG_NAME, "wav")
