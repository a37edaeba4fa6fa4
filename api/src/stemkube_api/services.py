"""What the routes work with: one ``Services`` per app, set by ``create_app`` and handed to each
route as a FastAPI dependency (``ServicesDep``)."""

import contextlib
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from stemkube_api.auth.caller import Caller
from stemkube_api.errors import ApiError
from stemkube_api.interfaces import JobBackend, ObjectStore, UnavailableError
from stemkube_api.jobs import JobRecord
from stemkube_api.metrics import Metrics
from stemkube_api.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    backend: JobBackend
    store: ObjectStore
    metrics: Metrics

    async def find(self, job_id: str, caller: Caller) -> JobRecord:
        """The job, or a 404: another tenant's job is missing, word for word, for this caller."""
        record = await run_in_threadpool(self.backend.get, job_id)
        if record is None or not caller.sees(record.tenant):
            raise not_found(job_id)
        return record

    async def delete(self, record: JobRecord) -> bool:
        """Cancels and deletes a job and the files it owns; False when it was gone already.
        The operator's finalizer removes the files too; removing them here also covers a job
        deleted before the operator ever saw it."""
        if not await run_in_threadpool(self.backend.delete, record.job_id):
            return False
        for key in record.owned_keys:
            with contextlib.suppress(UnavailableError):
                await run_in_threadpool(self.store.delete, key)
        return True


def not_found(job_id: str) -> ApiError:
    return ApiError(404, f"job {job_id} not found")


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]
