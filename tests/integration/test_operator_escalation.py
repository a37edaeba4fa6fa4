"""A SeparationJob's spec cannot escalate (issue #15 item 2, issue #18): one table of specs
through the real operator (each refused one Failed with its reason and one event, no Job,
storage untouched), and through the chart's ValidatingAdmissionPolicy applied to the real API
server, which must give the operator's pure check's verdict on every row."""

import contextlib
import json
import subprocess
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from minio import Minio

from stemkube_contract import kueue, podpolicy, refusals
from stemkube_contract.resource import GROUP, PLURAL, VERSION
from stemkube_operator.admission import refusal
from stemkube_operator.config import load_config
from tests.harness.fixtures import Cluster, kubectl
from tests.harness.minio import MinioServer
from tests.harness.stemkube import OperatorFactory
from tests.harness.tools import REPO_ROOT, tool
from tests.harness.waiting import wait_for
from tests.integration.test_operator import events_of, jobs_of, read, upload

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "stemkube"
VALUES = [
    '--set-json=separator.allowedPriorityClasses=["stemkube-batch"]',
    '--set-json=separator.allowedPodLabels=["team","example.com/"]',
    '--set-json=separator.allowedPodAnnotations=["example.com/note"]',
    '--set-json=separator.kueue.allowedPriorityClasses=["stemkube-low"]',
    "--set=limits.segment=10",
]
# The operator's settings that decide the table, as the chart renders them from VALUES.
POLICY_ENV = (
    podpolicy.ALLOWED_PRIORITY_CLASSES_ENV,
    podpolicy.ALLOWED_POD_LABELS_ENV,
    podpolicy.ALLOWED_POD_ANNOTATIONS_ENV,
    podpolicy.MAX_ACTIVE_DEADLINE_SECONDS_ENV,
    podpolicy.MAX_TTL_SECONDS_AFTER_FINISHED_ENV,
    "STEMKUBE_PRIORITY_CLASS",
    kueue.ALLOWED_PRIORITY_CLASSES_ENV,
    kueue.PRIORITY_CLASS_ENV,
    kueue.QUEUE_ENV,
    "STEMKUBE_ACTIVE_DEADLINE_SECONDS",
    "STEMKUBE_TTL_SECONDS_AFTER_FINISHED",
    "STEMKUBE_LIMITS",
)
USER = podpolicy.USER_PREFIX
FORBIDDEN, INVALID = refusals.FORBIDDEN, refusals.INVALID_ARGUMENTS
# Rows the CRD itself refuses (422): too large for the operator's own bookkeeping on the
# SeparationJob (Kopf's copy of its spec in an annotation) and for the pod.
AT_CREATION = ("300kb-annotations", "overlong-label-key")

# name -> (spec fields, the reason it fails with; None: it runs)
CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "plain": ({}, None),
    "allowed-keys": (
        {
            "labels": {f"{USER}song": "a", "team": "x", "example.com/tier": "gold"},
            "annotations": {f"{USER}note": "any text at all", "example.com/note": "n"},
        },
        None,
    ),
    "allowed-priority": ({"priorityClassName": "stemkube-batch"}, None),
    "at-the-maxima": (
        {"activeDeadlineSeconds": 21600, "ttlSecondsAfterFinished": 604800, "segment": 10},
        None,
    ),
    "system-priority": ({"priorityClassName": "system-node-critical"}, FORBIDDEN),
    "allowed-kueue-priority": ({"workloadPriorityClass": "stemkube-low"}, None),
    "kueue-priority": ({"workloadPriorityClass": "preempt-everyone"}, FORBIDDEN),
    "other-apps-label": ({"labels": {"app": "payments-frontend"}}, FORBIDDEN),
    "stemkube-own-label": ({"labels": {"stemkube.io/separation-job-uid": "x"}}, FORBIDDEN),
    "apparmor-unconfined": (
        {"annotations": {"container.apparmor.security.beta.kubernetes.io/separator": "unconfined"}},
        FORBIDDEN,
    ),
    "lookalike-prefix": ({"annotations": {"user.stemkube.io.evil.com/x": "y"}}, FORBIDDEN),
    "allowed-key-is-no-prefix": ({"annotations": {"example.com/notes": "n"}}, FORBIDDEN),
    "300kb-annotations": ({"annotations": {f"{USER}blob": "x" * 300_000}}, INVALID),
    "overlong-label-key": ({"labels": {f"{USER}{'a' * 400}": "v"}}, INVALID),
    "invalid-label-key": ({"labels": {f"{USER}not a key": "v"}}, INVALID),
    "invalid-label-value": ({"labels": {f"{USER}song": "has spaces"}}, INVALID),
    "invalid-annotation-key": ({"annotations": {"-bad-/x": "v"}}, INVALID),
    "deadline-over-maximum": ({"activeDeadlineSeconds": 21601}, INVALID),
    "ttl-over-maximum": ({"ttlSecondsAfterFinished": 30 * 86400}, INVALID),
    "segment-over-limit": ({"segment": 10.5}, INVALID),
}
# What field each refused row's message names (the operator's and the policy's alike).
FIELD = {
    "system-priority": "spec.priorityClassName 'system-node-critical'",
    "kueue-priority": "spec.workloadPriorityClass 'preempt-everyone'",
    "other-apps-label": "spec.labels key 'app'",
    "stemkube-own-label": "spec.labels key 'stemkube.io/separation-job-uid'",
    "apparmor-unconfined": "spec.annotations key 'container.apparmor",
    "lookalike-prefix": "spec.annotations key 'user.stemkube.io.evil.com/x'",
    "allowed-key-is-no-prefix": "spec.annotations key 'example.com/notes'",
    "300kb-annotations": "spec.annotations",
    "overlong-label-key": "spec.labels",
    "invalid-label-key": f"spec.labels key '{USER}not a key'",
    "invalid-label-value": f"spec.labels['{USER}song']",
    "invalid-annotation-key": "spec.annotations key '-bad-/x'",
    "deadline-over-maximum": "spec.activeDeadlineSeconds 21601",
    "ttl-over-maximum": "spec.ttlSecondsAfterFinished 2592000",
    "segment-over-limit": "spec.segment: 10.5",
}


def render(namespace: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [
            str(tool("helm")),
            "template",
            "stemkube",
            str(CHART),
            f"--namespace={namespace}",
            f"--set=operator.watchNamespaces={{{namespace}}}",
            *VALUES,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def policy_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    [operator] = [
        d for d in docs if d["kind"] == "Deployment" and "operator" in d["metadata"]["name"]
    ]
    env = operator["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["value"] for e in env if e["name"] in POLICY_ENV}


def body(name: str, bucket: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SeparationJob",
        "metadata": {"name": name},
        "spec": {
            "input": {"bucket": bucket, "key": f"inputs/{name}/song.wav"},
            "output": {"bucket": bucket, "key": f"results/{name}.zip"},
            # Created suspended, for Kueue: the rows that run get their Job and no pod, so no
            # separation is spent on what only their Job's manifest shows.
            "queueName": "none",
            **fields,
        },
    }


def listing(s3: Minio, bucket: str) -> dict[str, tuple[str | None, Any]]:
    return {
        o.object_name: (o.etag, o.last_modified)
        for o in s3.list_objects(bucket, recursive=True)
        if o.object_name
    }


@contextlib.contextmanager
def applied(cluster: Cluster, docs: list[dict[str, Any]]) -> Iterator[None]:
    """Cluster-scoped admission objects, removed after the test (their bindings name only the
    test's namespace, so no other test meets them meanwhile)."""
    text = yaml.safe_dump_all(docs)
    kubectl(cluster, "apply", "-f", "-", stdin=text)
    try:
        yield
    finally:
        kubectl(cluster, "delete", "--ignore-not-found", "-f", "-", stdin=text, check=False)


def refusing_jobs_policy(namespace: str) -> list[dict[str, Any]]:
    """A cluster's own policy on Jobs (not stemkube's): the API server refuses the Jobs of two
    rows that the operator's check lets through, one as invalid (422), one as forbidden (403)."""
    name = f"refuse-jobs-{namespace}"
    labels = "object.spec.template.metadata.labels"
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["batch"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["jobs"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": f"!has({labels}) || !('{USER}refuse' in {labels})",
                        "reason": "Invalid",
                        "message": "this cluster refuses such Jobs",
                    },
                    {
                        "expression": f"!has({labels}) || !('{USER}forbid' in {labels})",
                        "reason": "Forbidden",
                        "message": "this cluster forbids such Jobs",
                    },
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        },
    ]


def wait_enforced(check: Any, what: str) -> None:
    """A new policy takes effect when the API server's informer has it: a second or so."""
    wait_for(check, 30, what, interval=0.3)


def test_the_operator_fails_every_escalation_before_any_job(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    objects = client.CustomObjectsApi(cluster.api)
    # Rows the operator's check admits but whose Jobs the API server refuses: before this
    # change a creation retried forever, the SeparationJob without a status.
    job_refused = {
        "job-invalid": ({"labels": {f"{USER}refuse": "yes"}}, INVALID),
        "job-forbidden": ({"labels": {f"{USER}forbid": "yes"}}, FORBIDDEN),
    }
    table = {name: row for name, row in {**CASES, **job_refused}.items() if name not in AT_CREATION}
    env = policy_env(render(namespace))
    with applied(cluster, refusing_jobs_policy(namespace)):
        probe = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "probe"},
            "spec": {
                "template": {
                    "metadata": {"labels": {f"{USER}refuse": "yes"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "none"}],
                    },
                }
            },
        }

        def jobs_refused() -> bool:
            try:
                client.BatchV1Api(cluster.api).create_namespaced_job(
                    namespace, probe, dry_run="All"
                )
            except ApiException as exc:
                return bool(exc.status == 422)
            return False

        wait_enforced(jobs_refused, "the cluster's policy on Jobs")
        for name in table:
            upload(s3, bucket, f"inputs/{name}/song.wav", b"RIFF not really a song")
        before = listing(s3, bucket)
        start_operator(**env)
        for name in AT_CREATION:
            with pytest.raises(ApiException) as refused:
                objects.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body(name, bucket, CASES[name][0])
                )
            assert refused.value.status == 422, name
            assert FIELD[name] in json.loads(refused.value.body)["message"], name
        uids = {
            name: objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body(name, bucket, fields)
            )["metadata"]["uid"]
            for name, (fields, _) in table.items()
        }

        def settled() -> dict[str, dict[str, Any]] | None:
            statuses = {name: read(cluster, namespace, name).get("status") or {} for name in table}
            done = all(
                s.get("phase") == "Failed" if table[n][1] else s.get("jobName")
                for n, s in statuses.items()
            )
            return statuses if done else None

        statuses = wait_for(settled, 45, "every row refused or given its Job")

    for name, (fields, reason) in table.items():
        status = statuses[name]
        jobs = jobs_of(cluster, namespace, uids[name])
        if reason is None:
            assert status["phase"] == "Pending", (name, status)
            [job] = jobs
            template = job.spec.template
            for key, value in (fields.get("labels") or {}).items():
                assert template.metadata.labels[key] == value, name
            for key, value in (fields.get("annotations") or {}).items():
                assert template.metadata.annotations[key] == value, name
            assert template.spec.priority_class_name == fields.get("priorityClassName"), name
            priority = job.metadata.labels.get(kueue.PRIORITY_CLASS_LABEL)
            assert priority == fields.get("workloadPriorityClass"), name
            continue
        assert (status["phase"], status["reason"]) == ("Failed", reason), (name, status)
        assert jobs == [], name
        words = FIELD.get(name) or "the API server refused the separation's Job"
        assert words in status["message"], (name, status["message"])
        events = wait_for(partial(events_of, cluster, namespace, name), 10, f"{name}'s event")
        assert events == [reason], name
    assert "this cluster forbids such Jobs" in statuses["job-forbidden"]["message"]
    assert (
        "is not allowed: the pod's labels from a SeparationJob must start with"
        in (statuses["other-apps-label"]["message"])
    )
    assert "'team', 'example.com/'" in statuses["other-apps-label"]["message"]
    assert "may name only 'stemkube-batch'" in statuses["system-priority"]["message"]
    # Nothing read into a result, nothing written or deleted.
    assert listing(s3, bucket) == before


def test_the_charts_admission_policy_gives_the_operators_verdict_on_every_row(
    cluster: Cluster, namespace: str, separation_crd: None
) -> None:
    docs = render(namespace)
    config = load_config(policy_env(docs))
    policy = [
        d
        for d in docs
        if d["kind"].startswith("ValidatingAdmissionPolicy")
        and d["metadata"]["name"] == "stemkube-pod-policy"
    ]
    assert [d["kind"] for d in policy] == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    expressions = json.dumps(policy[0]["spec"])
    # The contract's facts, as CEL string literals (JSON's) in the JSON of the policy.
    for fact in (
        podpolicy.QUALIFIED_NAME_PATTERN,
        podpolicy.LABEL_VALUE_PATTERN,
        podpolicy.USER_PREFIX,
    ):
        assert json.dumps(json.dumps(fact))[1:-1] in expressions, fact
    objects = client.CustomObjectsApi(cluster.api)

    def created(name: str, fields: dict[str, Any]) -> tuple[int, str]:
        try:
            objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body(name, "songs", fields), dry_run="All"
            )
        except ApiException as exc:
            return exc.status, json.loads(exc.body)["message"]
        return 201, ""

    with applied(cluster, policy):
        wait_enforced(
            lambda: created("probe", CASES["system-priority"][0])[0] == 403, "the chart's policy"
        )
        http = {None: 201, FORBIDDEN: 403, INVALID: 422}
        for name, (fields, reason) in CASES.items():
            spec = body(name, "songs", fields)["spec"]
            verdict = refusal(spec, config.models, config.limits, config.pod_policy)
            assert (verdict[0] if verdict else None) == reason, (name, verdict)
            code, message = created(name, fields)
            assert code == http[reason], (name, code, message)
            if reason:
                assert FIELD[name] in message, (name, message)
        # What the policy refuses, the API server says in the operator's words where it can.
        assert "may name only stemkube-batch" in created("x", CASES["system-priority"][0])[1]
    # Gone with the policy: the API server takes what only the operator then refuses.
    wait_enforced(lambda: created("after", CASES["system-priority"][0])[0] == 201, "removal")
