"""SeparationJob -> Job manifest."""

import signal
from typing import Any

import pytest

from stemkube_contract import exitcodes, joblink
from stemkube_contract.exitcodes import INVALID_INPUT as EXIT_INVALID_INPUT
from stemkube_contract.exitcodes import MODEL_NOT_FOUND as EXIT_MODEL_NOT_FOUND
from stemkube_contract.exitcodes import USAGE as EXIT_USAGE
from stemkube_operator.config import OperatorConfig, load_config
from stemkube_operator.jobspec import build_batch_job, build_job, separator_args
from stemkube_operator.resource import UID_LABEL, job_name


def separation_job(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "stemkube.io/v1alpha1",
        "kind": "SeparationJob",
        "metadata": {"name": "job-1", "namespace": "music", "uid": "u-1", "generation": 1},
        "spec": {
            "input": {"bucket": "stemkube", "key": "inputs/job-1/song.mp3", "filename": "s.mp3"},
            "output": {"bucket": "stemkube", "key": "results/job-1.zip"},
            "model": "htdemucs",
            "format": "mp3",
            "shifts": 1,
            "overlap": 0.25,
            **spec,
        },
    }


def test_defaults_give_the_original_service_output() -> None:
    args = separator_args(separation_job(), OperatorConfig())
    assert args[:2] == ["s3://stemkube/inputs/job-1/song.mp3", "s3://stemkube/results/job-1.zip"]
    assert "--model=htdemucs" in args
    assert "--format=mp3" in args
    assert "--bitrate=320" in args
    assert "--progress-cr=music/job-1" in args
    assert not any(a.startswith(("--stems", "--two-stems")) for a in args)


@pytest.mark.parametrize(
    ("spec", "present", "absent"),
    [
        ({"twoStems": "vocals"}, ["--two-stems=vocals"], ["--stems"]),
        ({"stems": ["drums", "bass"]}, ["--stems=drums,bass"], ["--two-stems"]),
        ({"format": "wav", "wavDepth": "24"}, ["--format=wav", "--wav-depth=24"], ["--bitrate"]),
        ({"format": "flac"}, ["--format=flac", "--wav-depth=16"], ["--bitrate"]),
        ({"format": "flac", "wavDepth": "24"}, ["--format=flac", "--wav-depth=24"], ["--bitrate"]),
        ({"bitrate": 128}, ["--bitrate=128"], []),
        ({"shifts": 3, "overlap": 0.5}, ["--shifts=3", "--overlap=0.5"], []),
        ({"segment": 5.5}, ["--segment=5.5"], []),
        ({}, [], ["--segment"]),
    ],
)
def test_options_reach_the_command_line(
    spec: dict[str, Any], present: list[str], absent: list[str]
) -> None:
    args = separator_args(separation_job(**spec), OperatorConfig())
    for arg in present:
        assert arg in args
    for prefix in absent:
        assert not any(a.startswith(prefix) for a in args)


def test_job_is_owned_linked_and_hardened() -> None:
    job = build_job(separation_job(), OperatorConfig())
    meta = job["metadata"]
    assert meta["name"] == "job-1"
    assert meta["namespace"] == "music"
    [owner] = meta["ownerReferences"]
    assert owner["uid"] == "u-1"
    assert owner["controller"] is True
    assert meta["labels"][UID_LABEL] == "u-1"
    template = job["spec"]["template"]
    assert template["metadata"]["labels"][UID_LABEL] == "u-1"
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    hardening = container["securityContext"]
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    env = {e["name"]: e for e in container["env"]}
    assert env[joblink.TOKEN_ENV]["value"] == joblink.token_path()


def _walk(value: Any) -> list[Any]:
    """Every key and value of a manifest, nested ones included."""
    if isinstance(value, dict):
        return [k for k in value] + [x for v in value.values() for x in _walk(v)]
    if isinstance(value, list):
        return [x for v in value for x in _walk(v)]
    return [value]


def test_the_separator_holds_no_storage_credential_nor_kubernetes_token() -> None:
    config = OperatorConfig(
        link_url="http://10.96.0.20:8082", s3_endpoint="http://minio:9000", s3_region="eu"
    )
    job = build_job(separation_job(), config)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    names = [e["name"] for e in container["env"]]
    assert not [n for n in names if n.startswith("AWS_")]
    assert not [e for e in container["env"] if "valueFrom" in e and "secretKeyRef" in str(e)]
    everything = _walk(job)
    assert "secretKeyRef" not in everything
    assert "secret" not in everything  # no Secret volume either
    assert "envFrom" not in everything
    assert "http://minio:9000" not in everything
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == config.service_account
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[joblink.URL_ENV] == "http://10.96.0.20:8082"
    assert env[joblink.TOKEN_ENV] == f"{joblink.TOKEN_DIR}/{joblink.TOKEN_FILE}"


def test_the_link_token_is_projected_for_the_link_audience_only() -> None:
    pod = build_job(separation_job(), OperatorConfig())["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "projected" in v]
    [source] = volume["projected"]["sources"]
    assert source == {
        "serviceAccountToken": {
            "audience": joblink.AUDIENCE,
            "expirationSeconds": joblink.TOKEN_SECONDS,
            "path": joblink.TOKEN_FILE,
        }
    }
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": joblink.TOKEN_DIR, "readOnly": True}


def test_failure_policy_fails_fast_on_bad_input_and_ignores_disruptions_and_deletions() -> None:
    rules = build_job(separation_job(), OperatorConfig())["spec"]["podFailurePolicy"]["rules"]
    fail_job = next(r for r in rules if r["action"] == "FailJob")
    assert set(fail_job["onExitCodes"]["values"]) == {
        EXIT_INVALID_INPUT,
        EXIT_USAGE,
        EXIT_MODEL_NOT_FOUND,
        # A URL job's source that another try cannot fix (issue 16).
        exitcodes.SOURCE_UNREACHABLE,
        exitcodes.SOURCE_TOO_LARGE,
        exitcodes.NOT_AUDIO,
        exitcodes.SOURCE_FORBIDDEN,
    }
    disruption, deleted = (r for r in rules if r["action"] == "Ignore")
    assert disruption["onPodConditions"] == [{"type": "DisruptionTarget"}]
    # A pod deleted under the separation (Kueue's preemption suspends the Job) uses no retry.
    assert deleted["onExitCodes"]["values"] == [exitcodes.TERMINATED] == [128 + signal.SIGTERM]
    assert exitcodes.TERMINATED not in exitcodes.FINAL_CODES


def test_cpu_cluster_asks_for_no_gpu() -> None:
    job = build_job(separation_job(), OperatorConfig(gpu_count=0))
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in resources.get("limits", {})


def test_configured_scheduling_and_custom_gpu_resource() -> None:
    config = OperatorConfig(
        gpu_resource="amd.com/gpu",
        gpu_count=2,
        node_selector={"gpu": "a100"},
        tolerations=({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},),
        runtime_class="nvidia",
        priority_class="batch-low",
        image_pull_secrets=("regcred",),
    )
    pod = build_job(separation_job(), config)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"][0]["key"] == "gpu"
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["priorityClassName"] == "batch-low"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_spec_overrides_deadline_ttl_priority_and_passes_labels() -> None:
    cr = separation_job(
        activeDeadlineSeconds=60,
        ttlSecondsAfterFinished=5,
        priorityClassName="urgent",
        labels={"team": "a", UID_LABEL: "spoofed"},
        annotations={"note": "x"},
    )
    job = build_job(cr, OperatorConfig(priority_class="batch-low"))
    assert job["spec"]["activeDeadlineSeconds"] == 60
    assert job["spec"]["ttlSecondsAfterFinished"] == 5
    template = job["spec"]["template"]
    assert template["spec"]["priorityClassName"] == "urgent"
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["labels"][UID_LABEL] == "u-1"  # ours cannot be overridden
    assert template["metadata"]["annotations"]["note"] == "x"


def test_kueue_queue_creates_a_suspended_labelled_job() -> None:
    job = build_job(separation_job(queueName="gpu-queue"), OperatorConfig())
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "suspend" not in build_job(separation_job(), OperatorConfig())["spec"]


def test_the_deployments_kueue_queue_and_priority_are_the_default() -> None:
    config = load_config({"STEMKUBE_KUEUE_QUEUE": "gpus", "STEMKUBE_KUEUE_PRIORITY_CLASS": "low"})
    labels = build_job(separation_job(), config)["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "gpus"
    assert labels["kueue.x-k8s.io/priority-class"] == "low"
    own = build_job(separation_job(queueName="mine", workloadPriorityClass="high"), config)
    assert own["spec"]["suspend"] is True
    assert own["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "mine"
    assert own["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"
    # No queue: Kueue does not manage the Job, and no priority label claims otherwise.
    plain = build_job(separation_job(), load_config({"STEMKUBE_KUEUE_PRIORITY_CLASS": "low"}))
    assert not [k for k in plain["metadata"]["labels"] if k.startswith("kueue.x-k8s.io/")]


def test_model_cache_volume_is_mounted_and_used() -> None:
    config = load_config({"STEMKUBE_MODEL_CACHE_CLAIM": "weights"})
    job = build_job(separation_job(), config)
    pod = job["spec"]["template"]["spec"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "weights"}} in pod["volumes"]
    assert "--model-repo=/models" in pod["containers"][0]["args"]


def test_job_name_fits_a_label_value() -> None:
    assert job_name("short") == "short"
    long_name = "x" * 200
    name = job_name(long_name)
    assert len(name) <= 63
    assert name == job_name(long_name)  # deterministic
    assert name != job_name("x" * 199)


def test_a_batch_job_keeps_the_link_token_and_no_credential() -> None:
    second = separation_job()
    second["metadata"] = {**second["metadata"], "name": "job-2", "uid": "u-2"}
    job = build_batch_job([separation_job(), second], OperatorConfig())
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert any("projected" in v for v in pod["volumes"])
    assert "secretKeyRef" not in _walk(job)
