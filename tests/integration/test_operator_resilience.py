"""The operator's stop paths on the real tier: SIGTERM in the middle of work, an API-server
outage longer than its lease, and storage gone during a separation's final upload."""

import io
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from stemkube_contract.resource import UID_LABEL
from stemkube_separator.pipeline import DECODED, ENCODED
from tests.harness import procs
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer, start_minio
from tests.harness.stemkube import Operator, OperatorFactory
from tests.harness.waiting import wait_for
from tests.integration.test_operator import create, read, upload, wait_phase

pytestmark = pytest.mark.integration

LEASE = "stemkube-operator"
BURST = 20
QUEUE = "gpu-queue"
# The chart leaves the pod's terminationGracePeriodSeconds at Kubernetes's 30 s: a stop must
# end well inside it, or every rollout ends in SIGKILL.
STOP_WITHIN_SECONDS = 10.0
LEASE_SECONDS = 15  # the operator's default
# Longer than the Lease: the operator cannot renew and must stop acting, then lead again.
OUTAGE_SECONDS = 60.0  # as issue #18 asks
# How long storage stays down once only the upload is left: the upload fails meanwhile.
STORE_DOWN_AFTER_ENCODED_SECONDS = 8.0


def jobs_by_owner(cluster: Cluster, namespace: str) -> dict[str, int]:
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
    counts: dict[str, int] = {}
    for job in jobs:
        uid = (job.metadata.labels or {}).get(UID_LABEL)
        if uid:
            counts[uid] = counts.get(uid, 0) + 1
    return counts


def holder(cluster: Cluster, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(LEASE, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease.spec.holder_identity or None


def stop_in_time(operator: Operator) -> float:
    """SIGTERM to the operator's process alone (as the kubelet sends it to the container's
    PID 1); how long it took to exit, which it must within the limit and with code 0."""
    began = time.monotonic()
    operator.process.popen.send_signal(signal.SIGTERM)
    try:
        code = operator.process.popen.wait(timeout=2 * STOP_WITHIN_SECONDS)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - began
    log = operator.process.log_tail(30)
    assert code is not None, f"still running {took:.0f}s after SIGTERM; log:\n{log}"
    assert took < STOP_WITHIN_SECONDS, f"exited after {took:.1f}s; log:\n{log}"
    assert code == 0, f"exit code {code}; log:\n{log}"
    return took


def test_sigterm_during_a_burst_exits_at_once_and_hands_over_the_lease(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    names = [f"burst-{i:02d}" for i in range(BURST)]
    for name in names:
        upload(s3, bucket, f"inputs/{name}/song.wav", sine_wav(0.5))
    leader = start_operator()
    standby = start_operator(wait_ready=False)
    # A Kueue queue name: each Job is created suspended and nothing runs, so that what is
    # timed is the operator's own stop, with its handlers busy creating Jobs.
    uids = [
        create(cluster, namespace, name, bucket, queueName=QUEUE)["metadata"]["uid"]
        for name in names
    ]
    # Stopped in the middle of the burst: some Jobs made, handlers at work on the rest.
    wait_for(lambda: len(jobs_by_owner(cluster, namespace)) >= 3, 60, "the first Jobs")

    took = stop_in_time(leader)
    # Released, not left to expire: the standby leads within its retry period, not the
    # Lease's 15 s.
    released = time.monotonic()
    wait_for(lambda: holder(cluster, namespace) == standby.process.name, 5, "standby holds")
    wait_for(standby.ready, 30, "standby ready")
    print(f"SIGTERM to exit: {took:.2f}s; exit to takeover: {time.monotonic() - released:.2f}s")

    def each_has_its_job() -> dict[str, int] | None:
        counts = jobs_by_owner(cluster, namespace)
        return counts if all(uid in counts for uid in uids) else None

    counts = wait_for(each_has_its_job, 90, "a Job for every SeparationJob")
    assert sorted(counts) == sorted(uids)
    assert set(counts.values()) == {1}, counts

    stop_in_time(standby)
    assert holder(cluster, namespace) is None


def test_api_server_outage_longer_than_the_lease_is_ridden_out(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    operator = start_operator()
    probes: list[tuple[float, int, bool]] = []  # (time, /healthz, ready) through the outage
    done = threading.Event()

    def probe() -> None:
        while not done.wait(0.25):
            if operator.process.alive():
                probes.append((time.monotonic(), operator.get("/healthz")[0], operator.ready()))

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    began = time.monotonic()
    try:
        cluster.plane.restart_apiserver(OUTAGE_SECONDS)
        back = time.monotonic() - began
        procs.wait_ready(operator.process, operator.ready, 60, "leading again")
    finally:
        done.set()
        prober.join(5)
    assert operator.process.alive(), operator.process.log_tail(60)
    # Alive throughout (its liveness probe must not kill it); not acting well before another
    # replica could take the Lease (15 s after its last renewal), nor until the server is back.
    assert all(healthz == 200 for _, healthz, _ in probes), probes
    stepped_down = next(t for t, _, ready in probes if not ready) - began
    assert stepped_down < LEASE_SECONDS, probes
    # (The server comes back some time after OUTAGE_SECONDS: stopping it takes a while.)
    down = [ready for t, _, ready in probes if stepped_down < t - began < OUTAGE_SECONDS]
    assert down, probes
    assert not any(down), probes
    led_again = next(t for t, _, ready in probes if ready and t - began > OUTAGE_SECONDS) - began
    assert holder(cluster, namespace) == operator.process.name
    upload(s3, bucket, "inputs/after/song.wav", sine_wav(0.5))
    uid = create(cluster, namespace, "after", bucket, queueName=QUEUE)["metadata"]["uid"]
    counts = wait_for(lambda: jobs_by_owner(cluster, namespace) or None, 60, "its Job")
    assert counts == {uid: 1}
    assert operator.process.alive()
    print(
        f"outage: stopped acting after {stepped_down:.1f}s; API server ready again after "
        f"{back:.1f}s; leading again after {led_again:.1f}s"
    )


def test_storage_down_during_the_final_upload_then_back_completes_whole(
    cluster: Cluster,
    stemkube_namespace: str,
    start_operator: OperatorFactory,
    tmp_path: Path,
) -> None:
    """MinIO stops once the song is fetched, so that the separation ends with storage gone:
    the upload waits (the separator retries the link, which answers for a store it cannot
    reach), and once MinIO is back the same attempt writes the whole ZIP; no multipart upload
    is left behind. A MinIO of its own: the session's serves every other test."""
    namespace, workdir, logs = stemkube_namespace, tmp_path / "store", tmp_path / "logs"
    store = start_minio(workdir, logs)
    try:
        s3 = store.client()
        s3.make_bucket("outage")
        upload(s3, "outage", "inputs/song/song.wav", sine_wav(20.0))
        start_operator(
            AWS_ENDPOINT_URL=store.url,
            AWS_ACCESS_KEY_ID=store.access_key,
            AWS_SECRET_ACCESS_KEY=store.secret_key,
        )
        create(cluster, namespace, "song", "outage")

        def progress() -> int:
            return int((read(cluster, namespace, "song").get("status") or {}).get("progress") or 0)

        wait_for(lambda: progress() >= DECODED, 120, "the song fetched and decoded")
        store.stop()
        # The stems are made and encoded with storage gone: what is left is the upload.
        wait_for(lambda: progress() >= ENCODED, 120, "the separation done, its upload waiting")
        time.sleep(STORE_DOWN_AFTER_ENCODED_SECONDS)
        assert read(cluster, namespace, "song")["status"]["phase"] == "Running"
        store = start_minio(workdir, logs, like=store)
        final = wait_phase(cluster, namespace, "song", ("Completed", "Failed"), timeout=180)
        status = final["status"]
        assert status["phase"] == "Completed", status
        # The separator's retries of the link (about 30 s) outlast the outage of its upload.
        assert status["attempts"] == 1, status
        s3 = store.client()
        with zipfile.ZipFile(io.BytesIO(s3.get_object("outage", "results/song.zip").read())) as z:
            assert z.testzip() is None
            assert sorted(n.rsplit(".", 1)[0] for n in z.namelist()) == sorted(
                status["result"]["stems"]
            )
        listed = s3._list_multipart_uploads("outage", prefix="results/")
        assert not listed.uploads, [u.object_name for u in listed.uploads]
    finally:
        store.stop()
