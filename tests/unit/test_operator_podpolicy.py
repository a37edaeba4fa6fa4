"""What a SeparationJob's spec may put on its pod (issue #15 item 2): the operator's pure check,
its configuration, and the contract's facts as the CRD and the chart state them."""

import json
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException

from stemkube_contract import podpolicy, refusals
from stemkube_contract.models import Catalog
from stemkube_contract.options import Limits, parse_limits
from stemkube_operator import kube
from stemkube_operator.admission import refusal
from stemkube_operator.config import ConfigError, load_config
from stemkube_operator.podpolicy import PodPolicy
from stemkube_operator.podpolicy import refusal as pod_refusal
from stemkube_operator.reconcile import _job_refusal
from tests.harness.tools import REPO_ROOT

USER = podpolicy.USER_PREFIX
FORBIDDEN, INVALID = refusals.FORBIDDEN, refusals.INVALID_ARGUMENTS
POLICY = PodPolicy(
    allowed_priority_classes=("batch-low",),
    default_priority_class="stemkube-default",
    allowed_labels=("team", "example.com/"),
    allowed_annotations=("example.com/note",),
    max_active_deadline_seconds=7200,
    max_ttl_seconds_after_finished=86400,
)


def test_a_kueue_priority_must_be_the_deployments_and_come_with_a_queue() -> None:
    policy = PodPolicy(
        allowed_workload_priority_classes=("batch-low",), default_workload_priority_class="mid"
    )
    for allowed in ("batch-low", "mid", ""):
        assert pod_refusal(spec(queueName="q", workloadPriorityClass=allowed), policy) is None
    assert pod_refusal(spec(queueName="q", workloadPriorityClass="urgent"), policy) == (
        FORBIDDEN,
        "spec.workloadPriorityClass 'urgent' is not allowed: SeparationJobs here may name only "
        "'mid', 'batch-low' (the chart's separator.kueue.allowedPriorityClasses)",
    )
    none = pod_refusal(spec(queueName="q", workloadPriorityClass="mid"), PodPolicy())
    assert none is not None
    assert "may name none" in none[1]
    no_queue = pod_refusal(spec(workloadPriorityClass="mid"), policy)
    assert no_queue is not None
    assert no_queue[0] == INVALID
    assert "spec.queueName" in no_queue[1]
    queued = PodPolicy(default_workload_priority_class="mid", default_queue="gpus")
    assert pod_refusal(spec(workloadPriorityClass="mid"), queued) is None
    config = load_config(
        {
            "STEMKUBE_KUEUE_QUEUE": "gpus",
            "STEMKUBE_KUEUE_PRIORITY_CLASS": "mid",
            "STEMKUBE_KUEUE_ALLOWED_PRIORITY_CLASSES": "batch-low,high",
        }
    ).pod_policy
    assert config.workload_priority_classes == ("mid", "batch-low", "high")
    assert config.default_queue == "gpus"


def spec(**fields: Any) -> dict[str, Any]:
    return {
        "input": {"bucket": "songs", "key": "inputs/a/song.wav"},
        "output": {"bucket": "songs", "key": "results/a.zip"},
        **fields,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"priorityClassName": "batch-low"},
        {"priorityClassName": "stemkube-default"},
        {"priorityClassName": ""},  # the deployment's own
        {"labels": {f"{USER}song": "a", "team": "", "example.com/x": "v.1_2-3"}},
        {"annotations": {f"{USER}note": "any text, spaces and all", "example.com/note": "n"}},
        {"annotations": {f"{USER}{'n' * 46}": "x" * (podpolicy.MAX_ANNOTATIONS_CHARACTERS - 63)}},
        {"labels": {f"{USER}{'b' * 63}": "c" * 63}},  # the longest name and value
        {"activeDeadlineSeconds": 7200, "ttlSecondsAfterFinished": 86400},
    ],
)
def test_what_a_deployment_allows_passes(fields: dict[str, Any]) -> None:
    assert pod_refusal(spec(**fields), POLICY) is None


@pytest.mark.parametrize(
    ("fields", "reason", "words"),
    [
        (
            {"priorityClassName": "system-node-critical"},
            FORBIDDEN,
            "spec.priorityClassName 'system-node-critical' is not allowed: SeparationJobs here "
            "may name only 'stemkube-default', 'batch-low'",
        ),
        (
            {"labels": {"app": "payments-frontend"}},
            FORBIDDEN,
            "spec.labels key 'app' is not allowed: the pod's labels from a SeparationJob must "
            "start with 'user.stemkube.io/' or be one of 'team', 'example.com/'",
        ),
        ({"labels": {"stemkube.io/separation-job-uid": "x"}}, FORBIDDEN, "'stemkube.io/"),
        ({"labels": {"team/x": "y"}}, FORBIDDEN, "'team/x'"),  # an exact entry is no prefix
        ({"labels": {"user.stemkube.io.evil.com/x": "y"}}, FORBIDDEN, "evil"),
        (
            {"annotations": {"container.apparmor.security.beta.kubernetes.io/separator": "x"}},
            FORBIDDEN,
            "spec.annotations key 'container.apparmor.security.beta.kubernetes.io/separator'",
        ),
        ({"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "x"}}, FORBIDDEN, "seccomp"),
        ({"annotations": {"example.com/notes": "x"}}, FORBIDDEN, "'example.com/notes'"),
        ({"labels": {f"{USER}a b": "v"}}, INVALID, "spec.labels key 'user.stemkube.io/a b'"),
        ({"labels": {f"{USER}{'a' * 64}": "v"}}, INVALID, "not a valid key"),
        ({"labels": {f"{'a' * 254}/b": "v"}}, INVALID, "longer than 253"),
        ({"labels": {f"{USER}song\n": "v"}}, INVALID, "not a valid key"),
        ({"labels": {f"{USER}song": "has spaces"}}, INVALID, "not a valid label value"),
        ({"labels": {f"{USER}song": "-dash"}}, INVALID, "not a valid label value"),
        ({"annotations": {"-bad-/x": "v"}}, INVALID, "spec.annotations key '-bad-/x'"),
        (
            {"annotations": {f"{USER}blob": "x" * 300_000}},
            INVALID,
            "spec.annotations: 300021 characters of keys and values; a SeparationJob's pod "
            "annotations may have at most 16384",
        ),
        (
            {"activeDeadlineSeconds": 7201},
            INVALID,
            "spec.activeDeadlineSeconds 7201 is more than this deployment allows (7200, the "
            "chart's separator.maxActiveDeadlineSeconds)",
        ),
        ({"ttlSecondsAfterFinished": 86401}, INVALID, "spec.ttlSecondsAfterFinished 86401"),
    ],
)
def test_every_escalation_and_what_the_api_server_would_refuse_is_refused(
    fields: dict[str, Any], reason: str, words: str
) -> None:
    refused = pod_refusal(spec(**fields), POLICY)
    assert refused is not None
    assert refused[0] == reason
    assert words in refused[1], refused[1]


def test_the_longest_prefix_is_kubernetes_own() -> None:
    assert podpolicy.qualified_name_problem(f"{'a' * 253}/b") is None
    assert podpolicy.qualified_name_problem(f"{'a' * 254}/b") is not None
    assert podpolicy.label_value_problem("") is None


def test_annotation_keys_are_checked_lower_cased_as_the_api_server_does() -> None:
    allowed = PodPolicy(allowed_annotations=("Example.com/Note",))
    assert pod_refusal(spec(annotations={"Example.com/Note": "x"}), allowed) is None
    assert pod_refusal(spec(labels={"Example.com/Note": "x"}), allowed) is not None


def test_without_settings_only_the_user_prefix_and_no_priority_class_pass() -> None:
    policy = load_config({}).pod_policy
    assert policy == PodPolicy()
    assert pod_refusal(spec(labels={f"{USER}a": "b"}), policy) is None
    refused = pod_refusal(spec(priorityClassName="high"), policy)
    assert refused is not None
    assert "may name none: their pods get the deployment's" in refused[1]
    assert pod_refusal(spec(activeDeadlineSeconds=6 * 3600), policy) is None
    assert pod_refusal(spec(activeDeadlineSeconds=6 * 3600 + 1), policy) is not None
    assert pod_refusal(spec(ttlSecondsAfterFinished=7 * 86400 + 1), policy) is not None


def test_admission_tells_an_escalation_first_and_still_checks_the_options() -> None:
    both = spec(priorityClassName="system-node-critical", shifts=9)
    limits = parse_limits('{"shifts": 2}')
    assert refusal(both, Catalog(), limits, POLICY) == pod_refusal(both, POLICY)
    options_only = refusal(spec(shifts=9), Catalog(), limits, POLICY)
    assert options_only is not None
    assert options_only[0] == INVALID
    # Without a policy: the strictest one, never none.
    assert refusal(spec(labels={"app": "x"}), Catalog(), Limits()) is not None


def test_the_settings_from_the_environment() -> None:
    config = load_config(
        {
            podpolicy.ALLOWED_PRIORITY_CLASSES_ENV: "batch-low, batch-high",
            "STEMKUBE_PRIORITY_CLASS": "stemkube-default",
            podpolicy.ALLOWED_POD_LABELS_ENV: "team,example.com/",
            podpolicy.ALLOWED_POD_ANNOTATIONS_ENV: "example.com/note",
            podpolicy.MAX_ACTIVE_DEADLINE_SECONDS_ENV: "7200",
            podpolicy.MAX_TTL_SECONDS_AFTER_FINISHED_ENV: "86400",
        }
    )
    policy = config.pod_policy
    assert policy.priority_classes == ("stemkube-default", "batch-low", "batch-high")
    assert policy.allowed_labels == ("team", "example.com/")
    assert policy.allowed_annotations == ("example.com/note",)
    assert (policy.max_active_deadline_seconds, policy.max_ttl_seconds_after_finished) == (
        7200,
        86400,
    )


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({podpolicy.ALLOWED_POD_LABELS_ENV: "bad key"}, "STEMKUBE_ALLOWED_POD_LABELS: 'bad key'"),
        ({podpolicy.ALLOWED_POD_ANNOTATIONS_ENV: "/"}, "STEMKUBE_ALLOWED_POD_ANNOTATIONS"),
        ({podpolicy.MAX_ACTIVE_DEADLINE_SECONDS_ENV: "0"}, "at least 1"),
        ({podpolicy.MAX_TTL_SECONDS_AFTER_FINISHED_ENV: "a week"}, "must be an integer"),
        (
            {
                "STEMKUBE_ACTIVE_DEADLINE_SECONDS": "7201",
                podpolicy.MAX_ACTIVE_DEADLINE_SECONDS_ENV: "7200",
            },
            "STEMKUBE_ACTIVE_DEADLINE_SECONDS (7201) is above STEMKUBE_MAX_ACTIVE_DEADLINE_SECONDS",
        ),
        (
            {"STEMKUBE_TTL_SECONDS_AFTER_FINISHED": "999999999"},
            "STEMKUBE_TTL_SECONDS_AFTER_FINISHED (999999999) is above",
        ),
    ],
)
def test_bad_settings_stop_the_operator_naming_them(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_config(env)


def _api_error(status: int, message: str) -> ApiException:
    error = ApiException(status=status, reason="Refused")
    error.body = json.dumps({"kind": "Status", "message": message})
    return error


@pytest.mark.parametrize(
    ("status", "message", "final"),
    [
        (422, "metadata.annotations: Too long", True),
        (400, "bad request", True),
        (403, "denied by policy", True),
        (403, "exceeded quota: jobs, requested: count/jobs.batch=1", False),
        (409, "already exists", False),
        (429, "slow down", False),
        (500, "etcd", False),
    ],
)
def test_a_job_creation_the_api_server_will_never_accept_is_told_apart(
    status: int, message: str, final: bool
) -> None:
    refused = kube._refusal(_api_error(status, message))
    assert (refused is not None) == final
    if refused:
        assert (refused.status, refused.message) == (status, message)


def test_a_refused_job_fails_its_separation_without_the_urls_query() -> None:
    url = "https://songs.example.com/a.mp3?X-Amz-Signature=secret"
    error = kube.JobRefusedError(422, f"spec.template.spec.containers[0].env[9].value: {url!r}")
    reason, message = _job_refusal(error, {"input": {"url": url}})
    assert reason == INVALID
    assert message.startswith("the API server refused the separation's Job (422): ")
    assert "secret" not in message
    assert "https://songs.example.com/a.mp3" in message
    assert _job_refusal(kube.JobRefusedError(403, "no"), {})[0] == FORBIDDEN


def test_the_crd_and_the_chart_state_the_contracts_facts() -> None:
    crd = yaml.safe_load((REPO_ROOT / "crds/separationjobs.stemkube.io.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]
    [labels_rule] = props["labels"]["x-kubernetes-validations"]
    assert f"size(k) <= {podpolicy.MAX_KEY_LENGTH})" in labels_rule["rule"]
    [annotations_rule] = props["annotations"]["x-kubernetes-validations"]
    assert annotations_rule["rule"].endswith(f"<= {podpolicy.MAX_ANNOTATIONS_CHARACTERS}")
    values = yaml.safe_load((REPO_ROOT / "charts/stemkube/values.yaml").read_text())
    separator = values["separator"]
    assert separator["maxActiveDeadlineSeconds"] == podpolicy.DEFAULT_MAX_ACTIVE_DEADLINE_SECONDS
    assert (
        separator["maxTtlSecondsAfterFinished"] == podpolicy.DEFAULT_MAX_TTL_SECONDS_AFTER_FINISHED
    )
    assert separator["allowedPriorityClasses"] == []
    assert values["admissionPolicy"]["enabled"] is True
    policy = (REPO_ROOT / "charts/stemkube/templates/admission-policy.yaml").read_text()
    for fact in (podpolicy.QUALIFIED_NAME_PATTERN, podpolicy.LABEL_VALUE_PATTERN, USER):
        assert fact in policy, fact
    operator = (REPO_ROOT / "charts/stemkube/templates/operator.yaml").read_text()
    for name in (
        podpolicy.ALLOWED_PRIORITY_CLASSES_ENV,
        podpolicy.ALLOWED_POD_LABELS_ENV,
        podpolicy.ALLOWED_POD_ANNOTATIONS_ENV,
        podpolicy.MAX_ACTIVE_DEADLINE_SECONDS_ENV,
        podpolicy.MAX_TTL_SECONDS_AFTER_FINISHED_ENV,
    ):
        assert f"name: {name}," in operator, name


def test_no_key_of_stemkubes_own_is_under_the_users_prefix() -> None:
    from stemkube_contract import resource

    own = [v for k, v in vars(resource).items() if k.endswith(("_LABEL", "_ANNOTATION"))]
    assert own
    assert not [key for key in own if key.startswith(USER)]
