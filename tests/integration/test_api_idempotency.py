"""Idempotency-Key on POST /upload in both modes (the ``service`` fixture), with API keys: the
same key and file replay the first job and make no other; the same key with another file is a
409 that stores nothing; other keys, and the same key from another API key, make jobs of their
own; two requests of one key at once make one job. Kubernetes mode: the SeparationJob carries
the key's label and the request's annotation."""

import concurrent.futures
from typing import Any

import httpx
import pytest
from kubernetes import client

from stemkube_contract.resource import (
    GROUP,
    IDEMPOTENCY_KEY_LABEL,
    IDEMPOTENCY_REQUEST_ANNOTATION,
    PLURAL,
    VERSION,
)
from tests.harness.api import ApiServer, mp3_song
from tests.harness.service import KubernetesService, Service
from tests.harness.waiting import wait_for
from tests.integration.test_api_flow import wait_done

pytestmark = pytest.mark.integration

SONG = mp3_song(1.0)
OTHER = mp3_song(1.2)


def post(api: ApiServer, key: str | None, song: bytes = SONG, **fields: str) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    with api.client() as http:
        return http.post(
            "/upload", files={"file": ("song.mp3", song)}, data=fields, headers=headers
        )


def listed(api: ApiServer) -> list[str]:
    return [job["job_id"] for job in api.get("/jobs").json()["jobs"]]


def inputs(service: Service) -> list[str]:
    return [key for key in service.objects() if "/inputs/" in f"/{key}"]


def test_the_same_key_replays_and_another_request_is_refused(service: Service) -> None:
    api = service.start_api(keyed=True)
    first = post(api, "order-1", format="wav")
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    job_id = first.json()["job_id"]

    again = post(api, "order-1", format="wav")
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert listed(api) == [job_id]
    assert service.job_ids() == [job_id]
    assert len(inputs(service)) <= 1

    stored = service.objects()
    for refused in (post(api, "order-1", OTHER, format="wav"), post(api, "order-1")):
        assert refused.status_code == 409, refused.text
        assert "used for another request" in refused.json()["detail"]
    assert service.job_ids() == [job_id]
    assert [k for k in service.objects() if k not in stored and "/inputs/" in f"/{k}"] == []
    assert service.incomplete_uploads() == []

    # The job runs as any other, and a replay after it finished is still the first answer.
    assert wait_done(api, job_id)["status"] == "completed"
    late = post(api, "order-1", format="wav")
    assert late.headers["idempotent-replayed"] == "true"
    assert late.json() == first.json()

    # A malformed key: 400, nothing made.
    bad = post(api, "x" * 256)
    assert bad.status_code == 400
    assert "Idempotency-Key" in bad.json()["detail"]
    assert service.job_ids() == [job_id]

    if isinstance(service, KubernetesService):
        cr: dict[str, Any] = client.CustomObjectsApi(
            service.cluster.api
        ).get_namespaced_custom_object(GROUP, VERSION, service.namespace, PLURAL, job_id)
        assert len(cr["metadata"]["labels"][IDEMPOTENCY_KEY_LABEL]) == 63
        assert len(cr["metadata"]["annotations"][IDEMPOTENCY_REQUEST_ANNOTATION]) == 64


def test_other_keys_and_other_callers_make_their_own_jobs(service: Service) -> None:
    api = service.start_api(keyed=True)
    theirs = api.as_key(service.create_key("globex-ci", "globex"))
    one, two = post(api, "a"), post(api, "b")
    mine = post(api, "shared")
    other = post(theirs, "shared")
    assert [r.status_code for r in (one, two, mine, other)] == [200] * 4
    assert "idempotent-replayed" not in other.headers
    ids = {r.json()["job_id"] for r in (one, two, mine, other)}
    assert len(ids) == 4
    assert sorted(listed(api)) == sorted(ids - {other.json()["job_id"]})
    assert listed(theirs) == [other.json()["job_id"]]
    # Each caller's replay is its own.
    assert post(theirs, "shared").json()["job_id"] == other.json()["job_id"]
    assert post(api, "shared").json()["job_id"] == mine.json()["job_id"]
    assert sorted(service.job_ids()) == sorted(ids)


def test_one_key_at_once_from_two_connections_makes_one_job(service: Service) -> None:
    api = service.start_api(keyed=True)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post(api, "burst"), range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 3
    [job_id] = service.job_ids()
    assert listed(api) == [job_id]
    wait_for(lambda: len(inputs(service)) <= 1, 10, "the losers' inputs deleted")
    assert service.incomplete_uploads() == []
