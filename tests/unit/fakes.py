"""In-memory stand-ins for the REST API's job backend and object store, for the unit tests of
the routes (test_api_app.py) and of the upload receiver (test_api_upload.py)."""

import dataclasses
import datetime
import io
import urllib.parse
import zipfile
from collections.abc import Iterator
from typing import Any

from stemkube_api.auth.limits import Held, Usage, usage_of
from stemkube_api.interfaces import (
    IdempotentJob,
    JobExistsError,
    NewJob,
    ObjectInfo,
    ObjectNotFoundError,
    TooLargeError,
    UnavailableError,
)
from stemkube_api.jobs import JobPage, JobRecord, paginate, result_key
from stemkube_contract import options as catalogue
from stemkube_contract.models import Catalog

NOW = datetime.datetime(2026, 11, 24, 10, tzinfo=datetime.UTC)


class MemoryWriter:
    def __init__(self, store: "MemoryStore", key: str, limit: int) -> None:
        self.store, self.key, self.limit = store, key, limit
        self.data = bytearray()
        store.open_writers += 1

    def write(self, data: bytes) -> None:
        self.store.writes.append(len(data))
        self.data += data
        if len(self.data) > self.limit:
            self.abort()
            raise TooLargeError(self.limit)

    def commit(self) -> int:
        self.store.objects[self.key] = bytes(self.data)
        self.store.open_writers -= 1
        return len(self.data)

    def abort(self) -> None:
        if self.data is not None:
            self.store.open_writers -= 1
            self.store.aborted += 1
        self.data = bytearray()


class MemoryReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 1000):
            yield self.data[i : i + 1000]

    def close(self) -> None:
        pass


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.open_writers = 0
        self.aborted = 0
        self.writes: list[int] = []  # the size of each write, in order
        self.down = False
        self.ranges: list[tuple[int, int | None]] = []

    def writer(self, key: str, limit: int, content_type: str) -> MemoryWriter:
        return MemoryWriter(self, key, limit)

    def open(self, key: str, offset: int = 0, length: int | None = None) -> MemoryReader:
        if key not in self.objects:
            raise ObjectNotFoundError(key)
        self.ranges.append((offset, length))
        data = self.objects[key]
        end = len(data) if length is None else offset + length
        return MemoryReader(data[offset:end])

    def stat(self, key: str) -> ObjectInfo | None:
        data = self.objects.get(key)
        return None if data is None else ObjectInfo(key, len(data))

    def presigned_url(self, key: str, expires: datetime.timedelta, disposition: str) -> str:
        query = urllib.parse.urlencode({"response-content-disposition": disposition})
        return f"https://s3.example/{key}?{query}"

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def check(self) -> None:
        if self.down:
            raise UnavailableError("storage unreachable: connection refused")


MODELS = Catalog()


class MemoryBackend:
    name = "kubernetes"

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.created: list[NewJob] = []
        self.request_hashes: dict[str, str] = {}  # of the jobs made under idempotency keys
        self.down = False
        self.no_weights: dict[str, str] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def create(self, job: NewJob) -> JobRecord:
        if self.down:
            raise UnavailableError("kubernetes: connection refused")
        if job.job_id in self.jobs:
            raise JobExistsError(job.job_id)
        self.created.append(job)
        if job.idempotency_key is not None:
            self.request_hashes[job.job_id] = job.request_hash or ""
        record = JobRecord(
            job_id=job.job_id,
            status="pending",
            filename=job.filename,
            # Jobs of idempotency keys are replayed for a day after their creation.
            created_at=NOW if job.idempotency_key is None else datetime.datetime.now(datetime.UTC),
            progress=0,
            options=catalogue.effective(job.request, MODELS),
            stems=catalogue.stems_of(job.request, MODELS),
            input_key=job.input_key,
            result_key=result_key(job.job_id),
        )
        self.jobs[job.job_id] = record
        return record

    def get(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    def idempotent(self, job_id: str) -> IdempotentJob | None:
        record = self.jobs.get(job_id)
        return IdempotentJob(record, self.request_hashes.get(job_id, "")) if record else None

    def list(
        self, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JobPage:
        return paginate(self.jobs.values(), status, limit, cursor)

    def delete(self, job_id: str) -> bool:
        return self.jobs.pop(job_id, None) is not None

    def check(self) -> None:
        if self.down:
            raise UnavailableError("kubernetes: connection refused")

    def model_problem(self, model: str) -> str | None:
        return self.no_weights.get(model)

    def usage(self, key_id: str, now: datetime.datetime) -> Usage:
        """The key's jobs still held: queued or running, their input's and result's bytes."""
        return usage_of(
            Held(
                self.jobs[new.job_id].status in ("pending", "processing"),
                (new.input_size or 0) + (self.jobs[new.job_id].result_size or 0),
            )
            for new in self.created
            if new.key_id == key_id and new.job_id in self.jobs
        )

    def finish(self, job_id: str, store: MemoryStore, **changes: Any) -> None:
        record = self.jobs[job_id]
        members = {f"{s}.{record.format}": f"{s} audio".encode() * 100 for s in record.stems}
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        store.objects[record.result_key] = archive.getvalue()
        self.jobs[job_id] = dataclasses.replace(
            record, status="completed", progress=100, result_size=len(archive.getvalue()), **changes
        )
