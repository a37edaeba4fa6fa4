"""API keys and tenants on real parts, in both modes (the ``service`` fixture) where both have
the behaviour: keys made with ``stemkube-api keys`` as an operator would (SQLite in the data
folder; Secrets on the real API server), sent by curl-like clients. Missing, malformed, wrong,
revoked and expired keys; another tenant's job on every endpoint; an admin's view; the rate
limit; a revocation reaching two replicas; local mode's secure defaults."""

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from stemkube_api.auth import keys
from stemkube_contract.keys import input_key, result_key
from stemkube_contract.resource import API_KEY_ID_LABEL, GROUP, PLURAL, TENANT_LABEL, VERSION
from tests.harness.api import (
    HARNESS_TENANT,
    ApiFactory,
    ApiServer,
    create_key,
    mp3_song,
    revoke_key,
)
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.service import LocalService, Service
from tests.harness.stemkube import OperatorFactory
from tests.harness.waiting import wait_for
from tests.integration.test_api_flow import run_the_readme_curl_flow, wait_done

pytestmark = pytest.mark.integration

NOT_VALID = "the API key is not valid (unknown, revoked or mistyped)"


def refused(api: ApiServer, path: str = "/jobs") -> dict[str, Any]:
    """The 401 ``api``'s key gets, with its challenge."""
    response = api.get(path)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer realm="stemkube"'
    body: dict[str, Any] = response.json()
    return body


def test_missing_malformed_wrong_revoked_and_expired_keys_are_401(service: Service) -> None:
    api = service.start_api(keyed=True)
    assert api.get("/jobs").status_code == 200
    assert "required" in refused(api.as_key(None))["detail"]
    assert refused(api.as_key("not-a-key"))["detail"] == NOT_VALID
    key_id = (keys.split(api.key or "") or ("", ""))[0]
    assert refused(api.as_key(f"stk_{key_id}_{'A' * 43}"))["detail"] == NOT_VALID  # wrong secret
    for path in ("/upload", f"/status/{uuid.uuid4()}", "/models", f"/download/{uuid.uuid4()}"):
        method = "POST" if path == "/upload" else "GET"
        with api.as_key(None).client() as http:
            assert http.request(method, path).status_code == 401, path
    # The open routes stay open.
    for path in ("/", "/healthz", "/readyz", "/docs", "/openapi.json"):
        assert api.as_key(None).get(path).status_code == 200, path

    soon_revoked = api.as_key(service.create_key("leaver", "acme"))
    assert soon_revoked.get("/jobs").status_code == 200
    service.revoke_key("leaver")
    wait_for(lambda: soon_revoked.get("/jobs").status_code == 401, 10, "the revocation seen")
    assert refused(soon_revoked)["detail"] == NOT_VALID

    brief = api.as_key(service.create_key("brief", "acme", "--expires=2s"))
    assert brief.get("/jobs").status_code == 200
    time.sleep(2.5)
    assert refused(brief)["detail"].startswith("the API key 'brief' expired at ")
    assert service.objects() == []


def test_another_tenants_job_is_missing_on_every_endpoint(service: Service) -> None:
    mine = service.start_api(keyed=True)  # the harness's key: tenant HARNESS_TENANT
    theirs = mine.as_key(service.create_key("globex-ci", "globex"))
    admin = mine.as_key(service.create_key("ops", "ops", "--role=admin"))
    with mine.client() as http:
        job_id = http.post("/upload", files={"file": ("song.mp3", mp3_song(1.0))}).json()["job_id"]
    assert wait_done(mine, job_id)["status"] == "completed"
    assert service.objects() == sorted(
        [input_key(job_id, "mp3", HARNESS_TENANT), result_key(job_id, HARNESS_TENANT)]
    )
    assert mine.get(f"/download/{job_id}/vocals").status_code == 200

    missing = str(uuid.uuid4())
    for path in ("/status/{}", "/download/{}", "/download/{}/vocals"):
        theirs_answer = theirs.get(path.format(job_id))
        missing_answer = theirs.get(path.format(missing))
        assert theirs_answer.status_code == missing_answer.status_code == 404, path
        assert theirs_answer.json()["detail"] == f"job {job_id} not found"
        assert missing_answer.json()["detail"] == f"job {missing} not found"
    assert theirs.get("/jobs").json()["jobs"] == []
    with theirs.client() as http:
        deleted = http.delete(f"/job/{job_id}")
        assert deleted.status_code == 404
        assert deleted.json()["detail"] == f"job {job_id} not found"
        refusal = http.get("/jobs", params={"tenant": HARNESS_TENANT})
        assert refusal.status_code == 403
        assert refusal.json()["detail"] == "only admin keys may filter by tenant"
    assert mine.get(f"/status/{job_id}").json()["tenant"] is None  # shown to admins only

    # An admin sees every tenant's jobs, and one tenant's on asking.
    with admin.client() as http:
        [job] = http.get("/jobs").json()["jobs"]
        assert (job["job_id"], job["tenant"]) == (job_id, HARNESS_TENANT)
        assert http.get("/jobs", params={"tenant": "globex"}).json()["jobs"] == []
        assert len(http.get("/jobs", params={"tenant": HARNESS_TENANT}).json()["jobs"]) == 1
        assert http.get(f"/download/{job_id}").status_code == 200
    assert service.job_ids() == [job_id]
    with mine.client() as http:
        assert http.delete(f"/job/{job_id}").status_code == 200
    wait_for(lambda: service.objects() == [], 30, "its objects deleted")


def test_the_rate_limit_refuses_with_retry_after_and_recovers(service: Service) -> None:
    api = service.start_api(keyed=True)
    limited = api.as_key(service.create_key("tight", "acme", "--requests-per-minute=3"))
    # Begin early in a minute, so that three requests fit in one window.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    answers = [limited.get("/jobs") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    wait = int(answers[3].headers["retry-after"])
    assert 1 <= wait <= 60
    assert answers[3].json()["detail"] == (
        f"rate limit of key 'tight': 3 requests per minute; the next minute starts in {wait} s"
    )
    assert api.get("/jobs").status_code == 200  # per key: the harness's is untouched
    assert limited.get("/healthz").status_code == 200  # the open routes count for nothing
    # Recovery with the next minute; waited for only when it is near (the unit tests move a
    # clock through it: tests/unit/test_api_auth.py).
    if wait <= 10:
        time.sleep(wait + 0.5)
        assert limited.get("/jobs").status_code == 200


def test_job_quotas_refuse_uploads_naming_the_limit(service: Service) -> None:
    """Jobs queued or running at once (429 with Retry-After) and bytes stored (403), counted
    from the key's jobs (SeparationJobs; SQLite rows and files); nothing of a refused upload is
    left behind."""
    api = service.start_api(keyed=True)
    busy = api.as_key(service.create_key("busy", "acme", "--max-active-jobs=1"))
    with busy.client() as http:
        # A 30 s song: still pending or separating when the next upload comes.
        first = http.post("/upload", files={"file": ("long.wav", sine_wav(30.0))})
        assert first.status_code == 200, first.text
        job_id = first.json()["job_id"]
        second = http.post("/upload", files={"file": ("song.mp3", mp3_song(0.5))})
        assert http.get(f"/status/{job_id}").json()["status"] in ("pending", "processing")
        assert second.status_code == 429, second.text
        assert second.headers["retry-after"] == "10"
        assert second.json()["detail"] == (
            "key 'busy' may have 1 job(s) queued or running at once and has 1; try again when "
            "one finishes; nothing was stored"
        )
        assert all(job_id in key for key in service.objects())  # the first job's only
        assert service.incomplete_uploads() == []
        # Per key: the harness's key (no quotas) uploads meanwhile.
        with api.client() as other:
            theirs = other.post("/upload", files={"file": ("song.mp3", mp3_song(0.5))})
            assert theirs.status_code == 200, theirs.text
            assert other.delete(f"/job/{theirs.json()['job_id']}").status_code == 200
        # Its job deleted, the key may upload again.
        assert http.delete(f"/job/{job_id}").status_code == 200
        again = http.post("/upload", files={"file": ("song.mp3", mp3_song(0.5))})
        assert again.status_code == 200, again.text
        assert http.delete(f"/job/{again.json()['job_id']}").status_code == 200

    song = mp3_song(0.5)
    limit = len(song) * 3 // 2  # one song, not two
    tight = api.as_key(service.create_key("tight", "acme", f"--max-bytes-stored={limit}"))
    with tight.client() as http:
        first = http.post("/upload", files={"file": ("a.mp3", song)})
        assert first.status_code == 200, first.text
        refused = http.post("/upload", files={"file": ("b.mp3", song)})
        assert refused.status_code == 403, refused.text
        assert "retry-after" not in refused.headers
        detail = refused.json()["detail"]
        assert detail.startswith(f"key 'tight' may keep {limit} bytes of uploads and results ")
        assert "; this upload is at least " in detail  # refused as its bytes passed the room
        assert detail.endswith(
            ": delete finished jobs (or wait for them to expire); nothing was stored"
        )
        assert all(first.json()["job_id"] in key for key in service.objects())
        assert service.incomplete_uploads() == []
        assert [j["job_id"] for j in http.get("/jobs").json()["jobs"]] == [first.json()["job_id"]]
        assert http.delete(f"/job/{first.json()['job_id']}").status_code == 200
    wait_for(lambda: service.objects() == [], 30, "the objects deleted")


def test_the_audio_quota_counts_each_song_for_its_day_deleted_or_not(service: Service) -> None:
    """Minutes of audio per day: a song counts once its separator decoded it (status
    audioSeconds; local mode's progress file), and still counts after its job is deleted (the
    operator's ledger entry; local mode's table), so deleting gives no minutes back."""
    api = service.start_api(keyed=True)
    short = api.as_key(service.create_key("short", "acme", "--audio-minutes-per-day=0.05"))
    with short.client() as http:
        first = http.post("/upload", files={"file": ("four.wav", sine_wav(4.0))})
        assert first.status_code == 200, first.text  # nothing heard yet today
        job_id = first.json()["job_id"]
        assert wait_done(short, job_id)["status"] == "completed"

        def refused_after(what: str) -> None:
            again = http.post("/upload", files={"file": ("song.mp3", mp3_song(0.5))})
            assert again.status_code == 429, f"{what}: {again.text}"
            detail = again.json()["detail"]
            assert detail.startswith(
                "key 'short' may separate 0.05 minute(s) of audio in 24 hours and separated 0.1; "
                "the oldest of them leaves the window in "
            ), detail
            assert detail.endswith(" s; nothing was stored")
            assert 86000 < int(again.headers["retry-after"]) <= 86400
            assert service.incomplete_uploads() == []

        refused_after("its song separated")
        assert service.objects() != []  # the first job's files
        assert http.delete(f"/job/{job_id}").status_code == 200
        wait_for(lambda: service.objects() == [], 30, "the job's files deleted")
        refused_after("its job deleted")
        assert service.objects() == []
    # Another key of the same tenant has minutes of its own.
    with api.client() as other:
        theirs = other.post("/upload", files={"file": ("song.mp3", mp3_song(0.5))})
        assert theirs.status_code == 200, theirs.text
        assert other.delete(f"/job/{theirs.json()['job_id']}").status_code == 200


def test_local_mode_is_open_on_loopback_until_its_first_key(
    local_service: LocalService, tmp_path: Path
) -> None:
    """The seed's curl flow on a fresh machine, no key anywhere; then the first key, made on
    the running service, closes it at once."""
    api = local_service.start_local(args=("--log-level=debug",))
    run_the_readme_curl_flow(local_service, api, tmp_path, None)
    key = local_service.create_key("alice", "home")
    assert refused(api)["detail"].startswith("an API key is required")
    keyed = api.as_key(key)
    assert keyed.get("/jobs").json()["jobs"] == []
    with keyed.client() as http:
        job_id = http.post("/upload", files={"file": ("a.mp3", mp3_song(0.5))}).json()["job_id"]
    [row] = local_service.rows()
    assert (row["tenant"], row["key_id"]) == ("home", keys.split(key)[0])  # type: ignore[index]
    assert row["input_key"] == input_key(job_id, "mp3", "home")
    secret = (keys.split(key) or ("", ""))[1]
    assert secret not in api.process.log_path.read_text()


def test_local_mode_on_every_address_needs_a_key_or_no_auth(local_service: LocalService) -> None:
    refusal = local_service.start_local(wait_ready=False, args=("--host=0.0.0.0",))
    assert refusal.process.popen.wait(timeout=60) == 2
    said = refusal.process.log_path.read_text()
    assert "stemkube-api keys create --local --data-dir" in said
    assert "--no-auth" in said

    unguarded = local_service.start_local(args=("--host=0.0.0.0", "--no-auth"))
    assert unguarded.get("/jobs").status_code == 200
    unguarded.stop()

    key = local_service.create_key("ops", "ops", "--role=admin")
    guarded = local_service.start_local(args=("--host=0.0.0.0",), key=key)
    assert guarded.get("/jobs").status_code == 200
    assert refused(guarded.as_key(None))["detail"].startswith("an API key is required")


# Kubernetes mode only ---------------------------------------------------------------------


def test_presigned_downloads_and_the_labels_are_the_tenants(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
    start_api: ApiFactory,
) -> None:
    start_operator()
    mine = start_api(keyed=True, STEMKUBE_PRESIGNED_DOWNLOADS="true")
    where = ([f"--namespace={stemkube_namespace}"], {"KUBECONFIG": str(cluster.kubeconfig)})
    with mine.client() as http:
        job_id = http.post("/upload", files={"file": ("song.mp3", mp3_song(1.0))}).json()["job_id"]
    cr = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, stemkube_namespace, PLURAL, job_id
    )
    labels = cr["metadata"]["labels"]
    assert labels[TENANT_LABEL] == HARNESS_TENANT
    assert labels[API_KEY_ID_LABEL] == (keys.split(mine.key or "") or ("", ""))[0]
    assert cr["spec"]["output"]["key"] == result_key(job_id, HARNESS_TENANT)
    assert wait_done(mine, job_id)["status"] == "completed"

    redirect = mine.get(f"/download/{job_id}", follow_redirects=False)
    assert redirect.status_code == 307
    location = redirect.headers["location"]
    assert location.startswith(f"{minio_server.url}/{bucket}/tenants/{HARNESS_TENANT}/results/")
    assert httpx.get(location, timeout=30).status_code == 200
    other = mine.as_key(create_key(*where, "globex-ci", "globex"))
    hidden = other.get(f"/download/{job_id}", follow_redirects=False)
    assert hidden.status_code == 404
    assert "location" not in hidden.headers
    # A SeparationJob made with kubectl (no tenant label) is for admin keys only.
    client.CustomObjectsApi(cluster.api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        stemkube_namespace,
        PLURAL,
        job_id,
        {"metadata": {"labels": {TENANT_LABEL: None}}},  # a merge patch: null removes it
    )
    wait_for(lambda: mine.get(f"/status/{job_id}").status_code == 404, 10, "no tenant, unseen")
    ops = mine.as_key(create_key(*where, "ops", "ops", "--role=admin"))
    assert ops.get(f"/status/{job_id}").json()["tenant"] is None


def test_a_revocation_reaches_two_replicas_within_seconds(
    cluster: Cluster, stemkube_namespace: str, start_api: ApiFactory
) -> None:
    where = ([f"--namespace={stemkube_namespace}"], {"KUBECONFIG": str(cluster.kubeconfig)})
    key = create_key(*where, "roaming", "acme")
    replicas = [start_api(keyed=True, args=["--log-level=debug"]).as_key(key) for _ in range(2)]

    def answers(status: int) -> bool:
        return all(r.get("/jobs").status_code == status for r in replicas)

    wait_for(lambda: answers(200), 10, "the key seen by both")
    revoked_at = time.monotonic()
    revoke_key(*where, "roaming")
    wait_for(lambda: answers(401), 5, "the revocation seen by both", interval=0.05)
    took = time.monotonic() - revoked_at
    print(f"revocation seen by both replicas {took:.2f} s after `keys revoke` returned")
    secret = (keys.split(key) or ("", ""))[1]
    for replica in replicas:
        log = replica.process.log_path.read_text()
        assert secret not in log
        assert "refused GET /jobs: the API key is not valid" in log
