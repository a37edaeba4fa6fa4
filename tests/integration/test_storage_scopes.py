"""Storage confinement on the tier (``stemkube_contract.scopes``): with the chart's default
scopes (the release's bucket, prefix = namespace), a SeparationJob naming anything else fails
``Forbidden`` before any Job exists, and deleting it deletes nothing (the cleanup finalizer
included); the chart's ValidatingAdmissionPolicy refuses the same SeparationJobs at creation
with the operator's very message; and the API, under the same scopes, keeps its jobs' objects and
its audio ledger under its namespace's prefix, where its jobs run to completion.

The attacks are the ones that worked before confinement: another prefix's song read and its
stems written under ``stolen/``, another job's result overwritten, ``etc/passwd`` written,
another bucket read, and a never-run SeparationJob whose deletion removed others' objects."""

import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from minio import Minio

from stemkube_contract import refusals, scopes
from stemkube_contract.resource import GROUP, PLURAL, VERSION
from stemkube_contract.scopes import STORAGE_SCOPES_ENV, default_scopes
from stemkube_contract.usage import USAGE_PREFIX
from tests.harness.api import ApiFactory, mp3_song
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster, kubectl
from tests.harness.minio import MinioServer
from tests.harness.stemkube import OperatorFactory
from tests.harness.waiting import wait_for
from tests.integration.test_chart import CHART, helm
from tests.integration.test_operator import jobs_of, wait_phase

pytestmark = pytest.mark.integration


def ref(bucket: str, key: str) -> dict[str, str]:
    return {"bucket": bucket, "key": key}


def attacks(namespace: str, bucket: str, other_bucket: str) -> dict[str, dict[str, Any]]:
    """name -> spec of each SeparationJob that must be refused (its input and output)."""
    mine = f"{namespace}/inputs/mine/song.wav"
    return {
        "read-private": {
            "input": ref(bucket, "private/song.wav"),
            "output": ref(bucket, f"{namespace}/results/read-private.zip"),
        },
        "write-stolen": {"input": ref(bucket, mine), "output": ref(bucket, "stolen/stems.zip")},
        "overwrite": {"input": ref(bucket, mine), "output": ref(bucket, "results/victim.zip")},
        "etc-passwd": {"input": ref(bucket, mine), "output": ref(bucket, "etc/passwd")},
        "other-bucket": {
            "input": ref(other_bucket, f"{namespace}/in.wav"),
            "output": ref(bucket, f"{namespace}/results/other-bucket.zip"),
        },
        "neighbour": {  # a namespace whose name starts with this one's
            "input": ref(bucket, f"{namespace}x/in.wav"),
            "output": ref(bucket, f"{namespace}/results/neighbour.zip"),
        },
    }


def body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    spec = {**spec, "input": {**spec["input"], "filename": "song.wav"}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SeparationJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def everything(s3: Minio, *buckets: str) -> dict[tuple[str, str], str]:
    """Every object of ``buckets`` with its ETag: what must not change."""
    return {
        (b, str(o.object_name)): str(o.etag)
        for b in buckets
        for o in s3.list_objects(b, recursive=True)
    }


@pytest.fixture
def other_bucket(minio_server: MinioServer) -> Iterator[str]:
    s3 = minio_server.client()
    name = f"other-{uuid.uuid4().hex[:8]}"
    s3.make_bucket(name)
    yield name
    for item in s3.list_objects(name, recursive=True):
        s3.remove_object(name, str(item.object_name))
    s3.remove_bucket(name)


def test_separation_jobs_outside_their_storage_fail_forbidden_and_delete_nothing(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    other_bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    song = sine_wav(1.0)
    for where, key in (
        (bucket, "private/song.wav"),
        (bucket, "results/victim.zip"),
        (bucket, f"{namespace}/inputs/mine/song.wav"),
        (bucket, f"{namespace}x/in.wav"),
        (other_bucket, f"{namespace}/in.wav"),
    ):
        s3.put_object(where, key, io.BytesIO(song), len(song))
    before = everything(s3, bucket, other_bucket)
    confined = default_scopes(bucket)
    start_operator(**{STORAGE_SCOPES_ENV: confined.to_json()})

    objects = client.CustomObjectsApi(cluster.api)
    table = attacks(namespace, bucket, other_bucket)
    uids = {}
    for name, spec in table.items():
        created = objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body(name, spec)
        )
        uids[name] = created["metadata"]["uid"]
    for name, spec in table.items():
        status = wait_phase(cluster, namespace, name, ("Failed", "Completed"), timeout=30)["status"]
        assert (status["phase"], status["reason"]) == ("Failed", refusals.FORBIDDEN), status
        assert status["message"] == scopes.refusal(spec, namespace, confined)
        assert f"s3://{bucket}/{namespace}/" in status["message"]
        assert jobs_of(cluster, namespace, uids[name]) == []

    # Deleting them runs the cleanup finalizer, which must not touch what they named.
    for name in table:
        objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    wait_for(
        lambda: all(_gone(objects, namespace, name) for name in table),
        30,
        "the refused SeparationJobs are deleted",
    )
    # Outside the namespace's storage everything is as it was (inside it, the refused jobs'
    # own input went with them, as any job's does).
    outside = {k: v for k, v in before.items() if not confined.of(namespace).allows(*k)}
    assert outside == {
        k: v for k, v in everything(s3, bucket, other_bucket).items() if k in outside
    }
    assert set(outside) <= set(everything(s3, bucket, other_bucket))
    assert len(outside) == 4


def _gone(objects: client.CustomObjectsApi, namespace: str, name: str) -> bool:
    try:
        objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_the_admission_policy_refuses_the_same_with_the_operators_message(
    cluster: Cluster, stemkube_namespace: str, bucket: str, other_bucket: str
) -> None:
    namespace = stemkube_namespace
    rendered = helm(
        "template",
        "scopes",
        str(CHART),
        f"--namespace={namespace}",
        f"--set=storage.bucket={bucket}",
        "--show-only=templates/storage-scope-policy.yaml",
    ).stdout
    policy, binding = [d for d in yaml.safe_load_all(rendered) if d]
    # The tier is shared by every test: this binding holds in this test's namespace only.
    policy_name = f"scopes-{uuid.uuid4().hex[:8]}"
    policy["metadata"]["name"] = binding["metadata"]["name"] = policy_name
    binding["spec"]["policyName"] = policy_name
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all([policy, binding]))
    objects = client.CustomObjectsApi(cluster.api)
    try:
        allowed = {
            "input": ref(bucket, f"{namespace}/inputs/ok/song.wav"),
            "output": ref(bucket, f"{namespace}/results/ok.zip"),
        }
        confined = default_scopes(bucket)

        def refused(name: str, spec: dict[str, Any]) -> ApiException | None:
            try:
                objects.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body(name, spec)
                )
            except ApiException as exc:
                return exc
            objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return None

        # A new policy takes effect within seconds: wait until the first attack is refused.
        table = attacks(namespace, bucket, other_bucket)
        first = next(iter(table))
        wait_for(lambda: refused(first, table[first]), 30, "the policy in effect")
        for name, spec in table.items():
            exc = refused(name, spec)
            assert exc is not None, f"{name} was admitted"
            assert exc.status == 403, exc
            message = scopes.refusal(spec, namespace, confined)
            assert message is not None
            assert message in str(exc.body), (message, exc.body)
        assert refused("allowed", allowed) is None
        url_job = {"input": {"url": "https://example.com/a.mp3"}, "output": allowed["output"]}
        assert refused("url-job", url_job) is None
    finally:
        kubectl(cluster, "delete", "validatingadmissionpolicybinding", policy_name, "--wait=false")
        kubectl(cluster, "delete", "validatingadmissionpolicy", policy_name, "--wait=false")


def test_the_api_keeps_its_jobs_and_ledger_under_its_namespace_prefix(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_api: ApiFactory,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    confined = {STORAGE_SCOPES_ENV: default_scopes(bucket).to_json()}
    start_operator(**confined)
    api = start_api(keyed=True, **confined)
    with api.client() as http:
        response = http.post("/upload", files={"file": ("song.mp3", mp3_song(1.0))})
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        cr = wait_phase(cluster, namespace, job_id, ("Completed", "Failed"))
        assert cr["status"]["phase"] == "Completed", cr["status"]
        for side in ("input", "output"):
            assert cr["spec"][side]["bucket"] == bucket
            assert cr["spec"][side]["key"].startswith(f"{namespace}/"), cr["spec"]
        download = http.get(f"/download/{job_id}")
        assert download.status_code == 200
        assert http.delete(f"/job/{job_id}").status_code == 200

    def ledger() -> list[str]:
        return [
            str(o.object_name)
            for o in s3.list_objects(bucket, prefix=f"{namespace}/{USAGE_PREFIX}", recursive=True)
        ]

    # The deleted job's audio still counts: the operator's entry is under the same prefix.
    assert wait_for(ledger, 30, "the ledger entry under the namespace's prefix")
    keys = [str(o.object_name) for o in s3.list_objects(bucket, recursive=True)]
    assert all(key.startswith(f"{namespace}/") for key in keys), keys
