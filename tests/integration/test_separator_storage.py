"""The separator against the real MinIO and the real API server: ``s3://`` INPUT and OUTPUT,
multipart uploads that appear whole or not at all, and progress on a SeparationJob."""

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, watch
from minio.error import S3Error

from stemkube_contract.resource import GROUP, PLURAL, VERSION
from stemkube_separator import exitcodes, storage
from stemkube_separator.errors import TransientError
from stemkube_separator.locations import S3Object
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.separator_fixtures import (
    log_lines,
    make_audio,
    probe,
    run_separator,
    zip_members,
)

pytestmark = pytest.mark.integration


def s3_env(server: MinioServer) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": "us-east-1",
    }


def no_object(server: MinioServer, bucket: str, key: str) -> bool:
    try:
        server.client().stat_object(bucket, key)
    except S3Error as exc:
        return exc.code == "NoSuchKey"
    return False


def incomplete_uploads(server: MinioServer, bucket: str, key: str) -> list[str]:
    result = server.client()._list_multipart_uploads(bucket, prefix=key)
    return [upload.object_name for upload in result.uploads]


def create_job(cluster: Cluster, namespace: str, name: str, bucket: str) -> None:
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SeparationJob",
            "metadata": {"name": name},
            "spec": {
                "input": {"bucket": bucket, "key": f"inputs/{name}/song.ogg"},
                "output": {"bucket": bucket, "key": f"results/{name}.zip"},
            },
        },
    )


@pytest.fixture
def progress_seen(cluster: Cluster, namespace: str, separation_crd: None) -> Iterator[list[int]]:
    """Every ``status.progress`` value the API server announces in ``namespace``."""
    seen: list[int] = []
    api = client.CustomObjectsApi(cluster.api)
    stop = threading.Event()
    w = watch.Watch()

    def follow() -> None:
        for event in w.stream(
            api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
            timeout_seconds=300,
        ):  # fmt: skip
            value = (event["object"].get("status") or {}).get("progress")
            if value is not None and (not seen or seen[-1] != value):
                seen.append(int(value))
            if stop.is_set():
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    yield seen
    stop.set()
    w.stop()


def test_s3_round_trip_with_progress_on_the_job(
    cluster: Cluster,
    namespace: str,
    minio_server: MinioServer,
    bucket: str,
    progress_seen: list[int],
    tiny_model_repo: Path,
    tmp_path: Path,
) -> None:
    song = make_audio(tmp_path / "song.ogg", "-c:a", "libvorbis", seconds=3.0, rate=48000)
    minio_server.client().fput_object(bucket, "inputs/job-1/song.ogg", str(song))
    create_job(cluster, namespace, "job-1", bucket)
    term = tmp_path / "term"

    result = run_separator(
        f"s3://{bucket}/inputs/job-1/song.ogg", f"s3://{bucket}/results/job-1.zip",
        "--model-repo", tiny_model_repo, "--progress-cr", f"{namespace}/job-1",
        "--termination-log", term,
        env={**s3_env(minio_server), "KUBECONFIG": str(cluster.kubeconfig)},
    )  # fmt: skip

    assert result.returncode == exitcodes.OK, result.stderr
    assert not term.exists()
    zip_path = tmp_path / "result.zip"
    minio_server.client().fget_object(bucket, "results/job-1.zip", str(zip_path))
    members = zip_members(zip_path, tmp_path / "stems")
    assert sorted(members) == ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"]
    assert abs(probe(members["vocals.mp3"]).seconds - probe(song).seconds) <= 1152 / 44100

    job = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "job-1"
    )
    assert job["status"]["progress"] == 100
    assert progress_seen == sorted(progress_seen)
    assert progress_seen[-1] == 100
    logs = log_lines(result.stderr)
    assert all(line["job"] == "job-1" for line in logs)
    assert not [line for line in logs if line["level"] == "warning"], result.stderr


def test_progress_write_failure_never_fails_the_separation(
    cluster: Cluster, namespace: str, separation_crd: None, tiny_model_repo: Path, tmp_path: Path
) -> None:
    song = make_audio(tmp_path / "song.wav", "-c:a", "pcm_s16le")

    result = run_separator(
        song, tmp_path / "out.zip", "--model-repo", tiny_model_repo,
        "--progress-cr", f"{namespace}/no-such-job",
        env={"KUBECONFIG": str(cluster.kubeconfig)},
    )  # fmt: skip

    assert result.returncode == exitcodes.OK, result.stderr
    assert (tmp_path / "out.zip").exists()
    warnings = [line for line in log_lines(result.stderr) if line["level"] == "warning"]
    assert any("could not write progress" in str(line["msg"]) for line in warnings)


def test_missing_bucket_is_transient_and_writes_nothing(
    minio_server: MinioServer, bucket: str, tiny_model_repo: Path, tmp_path: Path
) -> None:
    song = make_audio(tmp_path / "song.wav", "-c:a", "pcm_s16le")
    term = tmp_path / "term"

    result = run_separator(
        song, f"s3://{bucket}-gone/results/x.zip", "--model-repo", tiny_model_repo,
        "--termination-log", term, env=s3_env(minio_server),
    )  # fmt: skip

    assert result.returncode == exitcodes.TRANSIENT, result.stderr
    assert "NoSuchBucket" in term.read_text()


def test_missing_input_object_is_invalid_input(
    minio_server: MinioServer, bucket: str, tiny_model_repo: Path, tmp_path: Path
) -> None:
    # Issue 19: it was transient, retried four times on GPU pods; it never appears.
    term = tmp_path / "term"
    result = run_separator(
        f"s3://{bucket}/inputs/none/song.mp3", tmp_path / "o.zip",
        "--model-repo", tiny_model_repo, "--termination-log", term, env=s3_env(minio_server),
    )  # fmt: skip
    assert result.returncode == exitcodes.INVALID_INPUT, result.stderr
    message = term.read_text()
    assert "NoSuchKey" in message
    assert f"s3://{bucket}/inputs/none/song.mp3 does not exist" in message


def _client_factory(server: MinioServer) -> storage.ClientFactory:
    from stemkube_separator import s3

    return lambda: s3.client(s3.S3Settings.from_env(s3_env(server)))


def test_multipart_upload_streams_and_completes(minio_server: MinioServer, bucket: str) -> None:
    data = os.urandom(3 * storage.PART_SIZE + 12345)  # four parts
    target = S3Object(bucket, "results/big.bin")

    with storage.open_output(target, _client_factory(minio_server)) as out:
        view = memoryview(data)
        for start in range(0, len(data), 1 << 20):
            out.write(bytes(view[start : start + (1 << 20)]))

    response = minio_server.client().get_object(bucket, "results/big.bin")
    try:
        got = response.read()
    finally:
        response.close()
        response.release_conn()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_failure_mid_upload_leaves_no_object(minio_server: MinioServer, bucket: str) -> None:
    target = S3Object(bucket, "results/half.zip")
    chunk = os.urandom(1 << 20)

    def write_then_crash() -> None:
        with storage.open_output(target, _client_factory(minio_server)) as out:
            for _ in range(2 * storage.PART_SIZE // len(chunk) + 1):  # past the first parts
                out.write(chunk)
            raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError, match="encoder crashed"):
        write_then_crash()

    assert no_object(minio_server, bucket, "results/half.zip")
    assert incomplete_uploads(minio_server, bucket, "results/half.zip") == []


def test_upload_error_surfaces_as_transient(minio_server: MinioServer, bucket: str) -> None:
    target = S3Object(f"{bucket}-gone", "results/x.zip")
    with (
        pytest.raises(TransientError, match="NoSuchBucket"),
        storage.open_output(target, _client_factory(minio_server)) as out,
    ):
        out.write(io.BytesIO(b"x" * 1000).read())
