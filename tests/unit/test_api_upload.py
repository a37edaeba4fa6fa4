"""The upload receiver without HTTP: form events, or body chunks, fed straight to it, with the
in-memory job backend and object store. What the routes' tests (test_api_app.py) see from
outside, here step by step: what is checked when, what is stored when, what is left behind."""

from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import pytest
from starlette.requests import ClientDisconnect

from stemkube_api.errors import ApiError
from stemkube_api.form import Event, Field, FileData, FileEnd, FileStart
from stemkube_api.interfaces import UnavailableError
from stemkube_api.jobs import JobRecord
from stemkube_api.metrics import Metrics
from stemkube_api.services import Services
from stemkube_api.settings import Settings
from stemkube_api.sniff import SNIFF_BYTES
from stemkube_api.upload import DRAIN_LIMIT, FORM_SLACK, WRITE_BATCH, UploadReceiver
from tests.harness.audio import sine_wav
from tests.unit.fakes import MemoryStore
from tests.unit.test_api_app import TenantBackend

SONG = sine_wav(0.2)
JOB = "0b7c3f52-5f0e-4a8e-9a43-1d6c1e6f3b10"
BOUNDARY = "XyZ"
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


class Upload:
    """One receiver and what it works with."""

    def __init__(self, **settings: Any) -> None:
        self.backend, self.store, self.metrics = TenantBackend(), MemoryStore(), Metrics()
        services = Services(Settings(**settings), self.backend, self.store, self.metrics)
        self.receiver = UploadReceiver(services, job_id=JOB)

    def consume(self, events: Iterable[Event]) -> JobRecord:
        async def stream() -> AsyncIterator[Event]:
            for event in events:
                yield event

        async def main() -> JobRecord:
            return await self.receiver.consume(stream())

        return anyio.run(main)

    def refused(self, events: Iterable[Event]) -> ApiError:
        with pytest.raises(ApiError) as caught:
            self.consume(events)
        return caught.value

    def receive(
        self, chunks: Iterable[bytes], content_type: str | None = FORM_TYPE, length: str = ""
    ) -> tuple[JobRecord | ApiError, int]:
        """The upload from body chunks: the job or the refusal, and how many chunks were read."""
        read = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal read
            for chunk in chunks:
                read += 1
                yield chunk

        async def main() -> JobRecord | ApiError:
            try:
                return await self.receiver.receive(body(), content_type, length)
            except ApiError as exc:
                return exc

        return anyio.run(main), read

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def nothing_stored(self) -> bool:
        return not self.store.objects and self.store.open_writers == 0 and not self.backend.created


def song_events(data: bytes = SONG, chunk: int = 100, name: str = "song.wav") -> list[Event]:
    return [
        FileStart("file", name, "audio/wav"),
        *(FileData(data[i : i + chunk]) for i in range(0, len(data), chunk)),
        FileEnd(),
    ]


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    """A multipart body of (name, value, filename) parts."""
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += value + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_song_in_small_pieces_becomes_one_object_and_one_job() -> None:
    upload = Upload()
    record = upload.consume(
        [
            Field("format", "wav"),
            *song_events(chunk=37, name="../My Song.wav"),
            Field("shifts", "2"),
        ]
    )
    assert record.job_id == JOB
    assert record.filename == "My Song.wav"
    [job] = upload.backend.created
    assert job.input_key == f"inputs/{JOB}/input.wav"
    assert job.request == {"format": "wav", "shifts": 2}
    assert upload.store.objects == {job.input_key: SONG}
    assert upload.store.open_writers == 0
    assert upload.sample("stemkube_api_upload_bytes_total") == len(SONG)
    assert upload.sample("stemkube_api_jobs_created_total") == 1


def test_the_writer_opens_after_the_sniffed_head_and_commits_only_at_the_end() -> None:
    upload = Upload()
    receiver = upload.receiver

    async def main() -> None:
        await receiver.feed(FileStart("file", "a.wav", ""))
        await receiver.feed(FileData(SONG[: SNIFF_BYTES - 1]))
        assert upload.store.open_writers == 0  # not yet enough to tell the format
        await receiver.feed(FileData(SONG[SNIFF_BYTES - 1 :]))
        assert upload.store.open_writers == 1
        assert receiver.key == f"inputs/{JOB}/input.wav"
        await receiver.feed(FileEnd())
        assert receiver.file_done

    anyio.run(main)
    assert upload.store.objects == {}  # written, not committed
    assert upload.store.open_writers == 1


def test_a_big_file_is_written_in_batches() -> None:
    upload = Upload()
    data = SONG + bytes(3 * WRITE_BATCH)
    upload.consume(song_events(data, chunk=64 * 1024))
    assert sum(upload.store.writes) == len(data)
    assert len(upload.store.writes) == 4
    assert all(size >= WRITE_BATCH for size in upload.store.writes[:-1])


def test_an_option_after_the_file_still_refuses_it_and_nothing_stays() -> None:
    upload = Upload()
    refused = upload.refused([Field("format", "wav"), *song_events(), Field("bitrate", "128")])
    assert (refused.status, refused.detail.split(":")[0]) == (422, "bitrate")
    assert upload.store.aborted == 1
    assert upload.nothing_stored()


def test_options_before_the_file_are_refused_before_a_writer_opens() -> None:
    upload = Upload()
    refused = upload.refused([Field("format", "wav"), Field("bitrate", "128"), *song_events()])
    assert refused.status == 422
    assert refused.detail.startswith("bitrate: ")
    assert upload.store.aborted == 0  # no writer was ever opened
    assert upload.nothing_stored()


def test_a_field_is_checked_as_it_arrives() -> None:
    upload = Upload()
    refused = upload.refused([Field("format", "ogg"), FileStart("file", "a.wav", "")])
    assert refused.detail.startswith("format: ")


def test_what_later_fields_may_fix_waits_for_them() -> None:
    upload = Upload()
    record = upload.consume(
        [Field("stems", "guitar"), *song_events(), Field("model", "htdemucs_6s")]
    )
    assert record.stems == ["guitar"]
    # Nothing comes to fix it: refused at the end, and the written file goes.
    upload = Upload()
    refused = upload.refused([Field("stems", "guitar"), *song_events()])
    assert refused.status == 422
    assert refused.detail.startswith("stems: ")
    assert upload.store.aborted == 1
    assert upload.nothing_stored()


def test_a_model_without_weights_is_refused_at_the_file_start() -> None:
    upload = Upload()
    upload.backend.no_weights["mdx"] = "not in the Demucs cache; give --model-repo"
    refused = upload.refused([Field("model", "mdx"), FileStart("file", "a.wav", "")])
    assert (refused.status, refused.reason) == (503, "no_weights")
    assert refused.detail == (
        "model mdx: not in the Demucs cache; give --model-repo; nothing was stored"
    )
    assert upload.store.aborted == 0
    # The deployment's default model when none is named.
    upload = Upload()
    upload.backend.no_weights["htdemucs"] = "no weights"
    assert upload.refused(song_events()).detail.startswith("model htdemucs: no weights")


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n" + bytes(2000), b"words\n" * 10])
def test_not_audio_is_415_naming_the_file(data: bytes) -> None:
    upload = Upload()
    refused = upload.refused(song_events(data, name="x.png"))
    assert (refused.status, refused.reason) == (415, "not_audio")
    assert refused.detail.startswith("file: 'x.png' is not an audio file this service reads: ")
    assert upload.nothing_stored()


def test_the_size_limit_holds_as_the_bytes_come() -> None:
    upload = Upload(max_file_size=len(SONG) - 1)
    refused = upload.refused(song_events(chunk=1000))
    assert (refused.status, refused.reason) == (413, "too_large")
    assert refused.detail == (
        f"file too large: the limit is {upload.receiver.settings.max_file_size_text} "
        f"({len(SONG) - 1} bytes); nothing was stored"
    )
    assert upload.store.aborted == 1
    assert upload.nothing_stored()
    # A file of exactly the limit is fine.
    assert Upload(max_file_size=len(SONG)).consume(song_events()).job_id == JOB


@pytest.mark.parametrize(
    ("events", "detail"),
    [
        ([FileStart("song", "a.wav", "")], "song: unknown file field; send the song as 'file'"),
        ([*song_events(), FileStart("file", "b.wav", "")], "file: send one file per upload"),
        ([Field("file", "x")], "file: must be a file upload, not a text field"),
        ([Field("format", "wav"), Field("format", "mp3")], "format: given twice"),
        ([Field("colour", "red")], "colour: unknown field; the form takes file, model, "),
        ([Field("model", "mdx")], "file: field required (send the song as the 'file' field)"),
        (song_events()[:-1], "file: the upload ended before the file did"),
    ],
)
def test_forms_that_are_not_an_upload_are_422(events: list[Event], detail: str) -> None:
    upload = Upload()
    refused = upload.refused(events)
    assert refused.status == 422
    assert refused.detail.startswith(detail)
    assert upload.nothing_stored()


def test_the_stored_input_goes_when_the_job_cannot_be_created() -> None:
    upload = Upload()
    upload.backend.down = True
    with pytest.raises(UnavailableError):
        upload.consume(song_events())
    assert upload.store.objects == {}
    assert upload.sample("stemkube_api_jobs_created_total") == 0


def test_a_body_in_chunks() -> None:
    upload = Upload()
    body = form(("two_stems", b"vocals", None), ("file", SONG, "a.wav"), ("format", b"flac", None))
    record, _ = upload.receive(chunked(body, 7))
    assert isinstance(record, JobRecord)
    [job] = upload.backend.created
    assert job.request == {"two_stems": "vocals", "format": "flac"}
    assert upload.store.objects[job.input_key] == SONG


def test_a_refusal_is_counted_and_the_rest_of_the_body_read() -> None:
    upload = Upload()
    body = form(("colour", b"red", None), ("file", SONG, "a.wav"))
    refused, read = upload.receive(chunked(body, 100))
    assert isinstance(refused, ApiError)
    assert refused.status == 422
    assert read == len(chunked(body, 100))  # drained, so the client sees the answer
    assert upload.sample("stemkube_api_uploads_rejected_total", reason="invalid") == 1


def test_backend_down_is_503_and_nothing_stays() -> None:
    upload = Upload()
    upload.backend.down = True
    refused, _ = upload.receive([form(("file", SONG, "a.wav"))])
    assert isinstance(refused, ApiError)
    assert (refused.status, refused.reason) == (503, "unavailable")
    assert refused.detail == "service unavailable: kubernetes: connection refused"
    assert upload.store.objects == {}
    assert upload.sample("stemkube_api_uploads_rejected_total", reason="unavailable") == 1


def test_a_far_too_large_length_is_refused_before_reading() -> None:
    upload = Upload(max_file_size=1000)
    length = str(1000 + FORM_SLACK + DRAIN_LIMIT + 1)
    refused, read = upload.receive([b"never read"], length=length)
    assert isinstance(refused, ApiError)
    assert (refused.status, refused.drain) == (413, False)
    assert read == 0
    assert upload.sample("stemkube_api_uploads_rejected_total", reason="too_large") == 1
    # Within the slack, the bytes themselves decide.
    accepted, _ = Upload(max_file_size=len(SONG)).receive(
        [form(("file", SONG, "a.wav"))], length=str(len(SONG) + FORM_SLACK + DRAIN_LIMIT)
    )
    assert isinstance(accepted, JobRecord)


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        (None, "file: send the song as multipart/form-data with a 'file' field"),
        ("text/plain", "file: send the song as multipart/form-data with a 'file' field, not"),
        ("multipart/form-data", "file: the multipart/form-data Content-Type has no boundary"),
    ],
)
def test_a_body_that_is_not_a_form_is_422(content_type: str | None, words: str) -> None:
    upload = Upload()
    refused, _ = upload.receive([b"hello"], content_type=content_type)
    assert isinstance(refused, ApiError)
    assert refused.status == 422
    assert refused.detail.startswith(words)


def test_a_client_that_goes_away_is_400_and_nothing_stays() -> None:
    upload = Upload()
    body = form(("file", SONG, "a.wav"))
    refused, _ = upload.receive(_then_disconnect(body[: len(body) // 2]))
    assert isinstance(refused, ApiError)
    assert (refused.status, refused.reason, refused.drain) == (400, "incomplete", False)
    assert refused.detail == "the client went away mid-upload"
    assert upload.store.aborted == 1
    assert upload.nothing_stored()


def _then_disconnect(data: bytes) -> Iterable[bytes]:
    yield data
    raise ClientDisconnect()
