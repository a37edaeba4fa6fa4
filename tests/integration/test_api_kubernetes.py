"""What only Kubernetes mode has: the SeparationJob an upload creates, several API processes
serving the same jobs (the SeparationJobs are the only state), presigned downloads, readiness
that depends on the cluster and the bucket. Metrics are checked in both modes."""

import io
import zipfile

import httpx
import pytest
from kubernetes import client

from stemkube_contract.resource import GROUP, PLURAL, VERSION
from tests.harness.api import ApiFactory, mp3_song
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.procs import free_port
from tests.harness.stemkube import OperatorFactory
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration


def test_two_api_instances_serve_the_same_jobs(
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
    start_api: ApiFactory,
) -> None:
    start_operator()
    first = start_api()
    second = start_api(STEMKUBE_PRESIGNED_DOWNLOADS="true")
    with first.client() as one, second.client() as two:
        job_id = one.post("/upload", files={"file": ("duo.mp3", mp3_song(1.0))}).json()["job_id"]
        # At once on the other instance: its watch may not have seen the job yet.
        status = two.get(f"/status/{job_id}")
        assert status.status_code == 200, status.text
        assert status.json()["filename"] == "duo.mp3"
        # Its list comes from its watch cache: there a moment later.
        wait_for(
            lambda: [j["job_id"] for j in two.get("/jobs").json()["jobs"]] == [job_id],
            10,
            "the job in the second instance's list",
        )

        done = wait_for(
            lambda: (s := two.get(f"/status/{job_id}").json())["status"] == "completed" and s,
            120,
            "completed, seen by the second instance",
        )
        assert one.get(f"/status/{job_id}").json() == done

        # The second instance hands out a short-lived URL of the object itself.
        redirect = two.get(f"/download/{job_id}")
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert location.startswith(f"{minio_server.url}/{bucket}/results/{job_id}.zip?")
        assert "X-Amz-Signature" in location
        fetched = httpx.get(location, timeout=30)
        assert fetched.status_code == 200
        assert fetched.headers["content-disposition"] == 'attachment; filename="duo_stems.zip"'
        direct = one.get(f"/download/{job_id}")
        assert direct.content == fetched.content
        assert len(zipfile.ZipFile(io.BytesIO(direct.content)).namelist()) == 4

        # Deleted through one, gone from both.
        assert two.delete(f"/job/{job_id}").status_code == 200
        assert two.get(f"/status/{job_id}").status_code == 404
        wait_for(lambda: one.get(f"/status/{job_id}").status_code == 404, 30, "gone from the first")
        assert one.get("/jobs").json()["jobs"] == []


def test_an_upload_becomes_a_separation_job(
    cluster: Cluster, stemkube_namespace: str, bucket: str, start_api: ApiFactory
) -> None:
    api = start_api()
    with api.client() as http:
        job_id = http.post("/upload", files={"file": ("song.mp3", mp3_song(0.3))}).json()["job_id"]
    cr = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, stemkube_namespace, PLURAL, job_id
    )
    # The user's file name is metadata on the CR; keys come from the job id.
    assert cr["spec"]["input"] == {
        "bucket": bucket,
        "key": f"inputs/{job_id}/input.mp3",
        "filename": "song.mp3",
    }
    assert cr["spec"]["output"] == {"bucket": bucket, "key": f"results/{job_id}.zip"}
    assert cr["metadata"]["labels"]["app.kubernetes.io/created-by"] == "stemkube-api"


def test_not_ready_without_its_bucket_or_storage(
    stemkube_namespace: str, start_api: ApiFactory
) -> None:
    # Not ready: a bucket that does not exist, or storage that does not answer.
    no_bucket = start_api(wait_ready=False, STEMKUBE_BUCKET="no-such-bucket")
    response = _answer(no_bucket.url, "/readyz", past_the_watch=True)
    assert response.status_code == 503
    assert "bucket no-such-bucket does not exist" in response.json()["detail"]
    no_storage = start_api(wait_ready=False, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    response = _answer(no_storage.url, "/readyz", past_the_watch=True)
    assert response.status_code == 503
    assert "storage" in response.json()["detail"]
    # Still alive, and the rest of the API still answers.
    assert httpx.get(f"{no_storage.url}/healthz").status_code == 200


def _get(url: str, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{url}{path}", timeout=30)
    except httpx.TransportError:
        return None


def _answer(url: str, path: str, past_the_watch: bool = False) -> httpx.Response:
    """The first answer of a server that is starting; ``past_the_watch``: the first once its
    SeparationJob watch has synced (before that, /readyz says only that, for a moment)."""

    def answer() -> httpx.Response | None:
        response = _get(url, path)
        if response is None or (past_the_watch and "watch not synced" in response.text):
            return None
        return response

    return wait_for(answer, 60, f"an answer from {url}{path}")
