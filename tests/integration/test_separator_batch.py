"""The separator's batch mode (``--item``) against the real API server and MinIO: each member's
outcome on its SeparationJob, members skipped, deleted while they run, and a pod killed
mid-batch run again. SeparationJobs are created directly (no operator), and the separator runs
as the batch Job's pod runs it: a process of its own."""

import io
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from minio.error import S3Error

from stemkube_contract.batch import item_args
from stemkube_contract.resource import GROUP, PLURAL, VERSION
from stemkube_separator import exitcodes, stages
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.separator_fixtures import SEPARATE, log_lines, make_audio, run_separator
from tests.harness.waiting import wait_for
from tests.integration.test_separator_timings import outside_the_stages

pytestmark = pytest.mark.integration

Logs = list[dict[str, Any]]


class Tier:
    """One test's namespace, bucket and model, and the batch's command line over them."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        server: MinioServer,
        bucket: str,
        repo: Path,
        tmp: Path,
    ) -> None:
        self.cluster, self.namespace, self.server = cluster, namespace, server
        self.bucket, self.repo, self.tmp = bucket, repo, tmp
        self.api = client.CustomObjectsApi(cluster.api)
        self.s3 = server.client()
        self.term = tmp / "termination-log"
        self.wall = 0.0  # the last run's, as this process measured it

    def create(self, name: str) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SeparationJob",
            "metadata": {"name": name},
            "spec": {
                "input": {"bucket": self.bucket, "key": self.input_key(name)},
                "output": {"bucket": self.bucket, "key": self.output_key(name)},
            },
        }
        created: dict[str, Any] = self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return created

    def song(self, name: str, seconds: float = 2.0, data: bytes | None = None) -> None:
        """The member's SeparationJob and its input object."""
        if data is None:
            path = make_audio(self.tmp / f"{name}.wav", "-c:a", "pcm_s16le", seconds=seconds)
            data = path.read_bytes()
        self.s3.put_object(self.bucket, self.input_key(name), io.BytesIO(data), len(data))
        self.create(name)

    def input_key(self, name: str) -> str:
        return f"inputs/{name}/song.wav"

    def output_key(self, name: str) -> str:
        return f"results/{name}.zip"

    def items(self, *names: str) -> list[str]:
        args: list[str] = []
        for name in names:
            args += item_args(
                f"s3://{self.bucket}/{self.input_key(name)}",
                f"s3://{self.bucket}/{self.output_key(name)}",
                self.namespace,
                name,
            )
        return args

    def command(self, *names: str, extra: tuple[str, ...] = ()) -> list[str]:
        return [*self.items(*names), "--model-repo", str(self.repo),
                "--termination-log", str(self.term), *extra]  # fmt: skip

    def env(self, **more: str) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.server.url,
            "AWS_ACCESS_KEY_ID": self.server.access_key,
            "AWS_SECRET_ACCESS_KEY": self.server.secret_key,
            "AWS_REGION": "us-east-1",
            "KUBECONFIG": str(self.cluster.kubeconfig),
            **more,
        }

    def run(self, *names: str, extra: tuple[str, ...] = (), **env: str) -> tuple[int, Logs]:
        started = time.perf_counter()
        result = run_separator(*self.command(*names, extra=extra), env=self.env(**env))
        self.wall = time.perf_counter() - started
        return result.returncode, log_lines(result.stderr)

    def start(self, *names: str, extra: tuple[str, ...] = ()) -> "subprocess.Popen[str]":
        """The batch as a process the test can kill; its log in ``tmp/<first name>.log``."""
        log = (self.tmp / f"{names[0]}.log").open("w")
        return subprocess.Popen(
            [str(SEPARATE), *self.command(*names, extra=extra)],
            env={**_base_env(), **self.env()},
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )

    def status(self, name: str) -> dict[str, Any]:
        cr = self.api.get_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return dict(cr.get("status") or {})

    def outcome(self, name: str) -> dict[str, Any] | None:
        value = self.status(name).get("outcome")
        return dict(value) if value is not None else None

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def result(self, name: str) -> Any:
        """The result object's stat, or None if there is none."""
        try:
            return self.s3.stat_object(self.bucket, self.output_key(name))
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise


def _base_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        env.pop(name, None)
    return env


@pytest.fixture
def tier(
    cluster: Cluster,
    namespace: str,
    separation_crd: None,
    minio_server: MinioServer,
    bucket: str,
    tiny_model_repo: Path,
    tmp_path: Path,
) -> Tier:
    return Tier(cluster, namespace, minio_server, bucket, tiny_model_repo, tmp_path)


def member_lines(logs: Logs, name: str) -> Logs:
    return [line for line in logs if line.get("job") == name]


def finished(logs: Logs, member: str) -> dict[str, Any]:
    [line] = [line for line in logs if line["msg"].startswith(f"member {member} finished in")]
    return line


def assert_timings_add_up(logs: Logs, wall: float) -> None:
    """The process's stages add up to its wall time, as its parent measured it (within what
    test_separator_timings allows: starting the process, flushing its last line)."""
    last = logs[-1]
    assert str(last["msg"]).startswith("finished in")
    timings = {str(k): float(v) for k, v in last["timings"].items()}
    assert list(timings) == [stage for stage in stages.ORDER if stage in timings]
    assert sum(timings.values()) == pytest.approx(float(last["wall"]), abs=0.01)
    assert abs(sum(timings.values()) - wall) <= outside_the_stages(wall), (wall, timings)


@pytest.mark.parametrize("overlap", ["0", "1"], ids=["cpu-turns", "gpu-overlap"])
def test_each_member_gets_its_outcome(tier: Tier, overlap: str) -> None:
    # "1": a GPU's way (the last encodes and the upload while the next member separates).
    tier.song("first")
    tier.song("noise", data=b"this is not audio at all, only text " * 50)
    tier.song("third")

    code, logs = tier.run("first", "noise", "third", STEMKUBE_BATCH_OVERLAP=overlap)

    assert code == exitcodes.OK, logs[-5:]
    assert not tier.term.exists()
    assert tier.outcome("first") == {"exitCode": 0, "message": ""}
    assert tier.outcome("third") == {"exitCode": 0, "message": ""}
    noise = tier.outcome("noise")
    assert noise is not None
    assert noise["exitCode"] == exitcodes.INVALID_INPUT
    assert "not an audio file FFmpeg can read" in noise["message"]
    assert tier.result("first") is not None
    assert tier.result("third") is not None
    assert tier.result("noise") is None
    assert tier.status("first")["progress"] == 100
    # Each member's lines name it; its last one gives its own stage timings.
    for name in ("first", "noise", "third"):
        line = finished(logs, f"{tier.namespace}/{name}")
        assert line["job"] == name
        assert set(line["timings"]) >= {"setup", "fetch", "decode", "finish"}
    assert finished(logs, f"{tier.namespace}/first")["timings"]["store"] > 0
    assert any("decoded" in str(line["msg"]) for line in member_lines(logs, "third"))
    assert any(str(line["msg"]).startswith("model htdemucs ready") for line in logs)
    assert sum(str(line["msg"]).startswith("model htdemucs ready") for line in logs) == 1
    assert_timings_add_up(logs, tier.wall)


def test_gone_and_ended_members_are_skipped(tier: Tier) -> None:
    tier.song("deleted")
    tier.delete("deleted")
    tier.song("ended")
    tier.api.patch_namespaced_custom_object_status(
        GROUP, VERSION, tier.namespace, PLURAL, "ended",
        {"status": {"outcome": {"exitCode": 0, "message": ""}}},
    )  # fmt: skip
    old = b"an earlier try's result"
    tier.s3.put_object(tier.bucket, tier.output_key("ended"), io.BytesIO(old), len(old))
    before = tier.result("ended")
    tier.song("fresh")

    code, logs = tier.run("deleted", "ended", "fresh")

    assert code == exitcodes.OK, logs[-5:]
    skipped = {line["member"]: line["skipped"] for line in logs if "skipped" in line}
    assert skipped == {
        f"{tier.namespace}/deleted": "its SeparationJob is gone",
        f"{tier.namespace}/ended": "it has already ended (outcome: exit code 0)",
    }
    assert tier.result("deleted") is None
    after = tier.result("ended")
    assert (after.etag, after.last_modified) == (before.etag, before.last_modified)
    assert tier.outcome("ended") == {"exitCode": 0, "message": ""}
    assert tier.outcome("fresh") == {"exitCode": 0, "message": ""}
    assert tier.result("fresh") is not None


def wait_progress(tier: Tier, name: str, above: int, proc: "subprocess.Popen[str]") -> None:
    def passed() -> bool:
        assert proc.poll() is None, "the batch ended first"
        return int(tier.status(name).get("progress", -1)) > above

    wait_for(passed, 60, f"{name}'s progress above {above}", interval=0.05)


def test_member_deleted_while_it_separates_stops(tier: Tier) -> None:
    # Segments overlapping by 3/4: four times the model's work, so that the separation lasts
    # well beyond the deletion being seen (the next progress write, within a second).
    tier.song("long", seconds=40.0)
    tier.song("next")
    proc = tier.start("long", "next", extra=("--overlap", "0.75"))
    try:
        wait_progress(tier, "long", 5, proc)
        deleted_at = time.monotonic()
        tier.delete("long")
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = log_lines((tier.tmp / "long.log").read_text())

    assert code == exitcodes.OK, logs[-5:]
    line = finished(logs, f"{tier.namespace}/long")
    assert line["fate"] == "gone"
    assert "separate" in line["timings"]
    assert "encode_tail" not in line["timings"]  # stopped while it separated
    assert tier.result("long") is None
    assert not any(str(x["msg"]).startswith("wrote") for x in member_lines(logs, "long"))
    stopped = next(x for x in logs if str(x["msg"]).startswith("stopped: SeparationJob"))
    assert stopped["job"] == "long"
    # Promptly: the next progress write finds it gone, the next segment stops.
    assert _seconds(stopped) - _seconds(logs[0]) < 60
    assert time.monotonic() - deleted_at < 60
    assert tier.outcome("next") == {"exitCode": 0, "message": ""}
    assert tier.result("next") is not None


def _seconds(line: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(line["ts"])).timestamp()


def test_killed_batch_run_again_redoes_only_the_unfinished(tier: Tier) -> None:
    tier.song("one", seconds=2.0)
    tier.song("two", seconds=10.0)
    tier.song("three", seconds=2.0)
    proc = tier.start("one", "two", "three")
    try:
        wait_for(lambda: tier.outcome("one") is not None, 120, "one's outcome", interval=0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert tier.outcome("two") is None  # killed while it ran

    code, logs = tier.run("one", "two", "three")

    assert code == exitcodes.OK, logs[-5:]
    skipped = [line["member"] for line in logs if "skipped" in line]
    assert skipped == [f"{tier.namespace}/one"]
    separated = [line["member"] for line in logs if str(line["msg"]).startswith("separating s3")]
    assert separated == [f"{tier.namespace}/two", f"{tier.namespace}/three"]
    for name in ("one", "two", "three"):
        assert tier.outcome(name) == {"exitCode": 0, "message": ""}
        assert tier.result(name) is not None


def test_sigterm_ends_the_batch_as_it_ends_a_single_run(tier: Tier) -> None:
    tier.song("running", seconds=40.0)
    tier.song("waiting")
    proc = tier.start("running", "waiting", extra=("--overlap", "0.75"))
    try:
        wait_progress(tier, "running", 5, proc)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert code == 128 + signal.SIGTERM
    assert "terminated (SIGTERM)" in tier.term.read_text()
    assert tier.outcome("running") is None  # the member in flight: a next pod redoes it
    assert tier.outcome("waiting") is None
    assert tier.result("running") is None


def test_a_model_that_cannot_load_ends_the_batch(tier: Tier) -> None:
    tier.song("a")
    tier.song("b")

    code, _ = tier.run("a", "b", extra=("--model", "no-such-model"))

    assert code == exitcodes.MODEL_NOT_FOUND
    assert "no-such-model" in tier.term.read_text()
    assert tier.outcome("a") is None
    assert tier.outcome("b") is None
