"""Several SeparationJobs in one Job: the manifest, and each member's status from its own
outcome."""

import datetime
import json
from typing import Any

from stemkube_contract import batch
from stemkube_contract.exitcodes import INVALID_INPUT
from stemkube_operator.config import OperatorConfig
from stemkube_operator.jobspec import build_batch_job, build_job, separator_args
from stemkube_operator.resource import UID_LABEL
from stemkube_operator.status import Observed, batch_size, desired_status

NOW = datetime.datetime(2026, 11, 28, 12, 0, 0, tzinfo=datetime.UTC)


def member(name: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "music",
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": "2026-11-28T11:58:00Z",
        },
        "spec": {
            "input": {"bucket": "b", "key": f"inputs/{name}/song.mp3"},
            "output": {"bucket": "b", "key": f"results/{name}.zip"},
            "model": "htdemucs",
            "format": "flac",
        },
        "status": status,
    }


MEMBERS = [member("a"), member("b"), member("c")]


def running_job(*conditions: dict[str, Any]) -> dict[str, Any]:
    job = build_batch_job(MEMBERS, OperatorConfig())
    job["status"] = {"active": 1, "startTime": "2026-11-28T11:59:00Z", "conditions": [*conditions]}
    return job


def running_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "a-x", "creationTimestamp": "2026-11-28T11:59:00Z"},
        "spec": {"nodeName": "gpu-0"},
        "status": {"phase": "Running", "containerStatuses": [{"name": "separator", "state": {}}]},
    }


def test_a_batch_job_names_every_member_and_is_owned_by_all() -> None:
    job = build_batch_job(MEMBERS, OperatorConfig())
    single = build_job(MEMBERS[0], OperatorConfig())
    assert job["metadata"]["name"] == single["metadata"]["name"]  # the leader's
    listed = batch.decode_members(job["metadata"]["annotations"][batch.MEMBERS_ANNOTATION])
    assert [m.name for m in listed] == ["a", "b", "c"]
    template = job["spec"]["template"]
    assert template["metadata"]["annotations"][batch.MEMBERS_ANNOTATION] == json.dumps(
        [{"name": m.name, "uid": m.uid} for m in listed], separators=(",", ":")
    )
    assert template["metadata"]["labels"][UID_LABEL] == "uid-a"  # how its pods are listed
    owners = job["metadata"]["ownerReferences"]
    assert [o["uid"] for o in owners] == ["uid-a", "uid-b", "uid-c"]
    assert not any(o["controller"] or o["blockOwnerDeletion"] for o in owners)
    assert job["spec"]["activeDeadlineSeconds"] == 3 * single["spec"]["activeDeadlineSeconds"]


def test_a_batch_command_line_has_the_options_once_and_an_item_per_member() -> None:
    args = build_batch_job(MEMBERS, OperatorConfig())["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    single = separator_args(MEMBERS[0], OperatorConfig())
    options = [a for a in single[2:] if not a.startswith(("--progress-cr", "--job-id"))]
    assert args[: len(options)] == options
    items = args[len(options) :]
    assert items == [
        *batch.item_args("s3://b/inputs/a/song.mp3", "s3://b/results/a.zip", "music", "a"),
        *batch.item_args("s3://b/inputs/b/song.mp3", "s3://b/results/b.zip", "music", "b"),
        *batch.item_args("s3://b/inputs/c/song.mp3", "s3://b/results/c.zip", "music", "c"),
    ]
    assert build_batch_job(MEMBERS[:1], OperatorConfig()) == build_job(MEMBERS[0], OperatorConfig())


def test_the_batch_key_ignores_only_the_objects() -> None:
    a, b = member("a"), member("b")
    assert batch.batch_key("music", a["spec"]) == batch.batch_key("music", b["spec"])
    assert batch.batch_key("music", a["spec"]) != batch.batch_key("other", b["spec"])
    b["spec"]["format"] = "mp3"
    assert batch.batch_key("music", a["spec"]) != batch.batch_key("music", b["spec"])


def test_members_run_together_and_say_so() -> None:
    status = desired_status(member("b"), Observed(running_job(), [running_pod()]), NOW)
    assert (status["phase"], status["message"]) == ("Running", "separating in a batch of 3")
    assert status["jobName"] == "a"
    assert batch_size(running_job()) == 3
    assert batch_size(build_job(MEMBERS[0], OperatorConfig()))


def test_a_member_ends_by_its_own_outcome_while_the_job_goes_on() -> None:
    done = member("a", **batch.outcome_patch(0, "")["status"])
    status = desired_status(done, Observed(running_job(), [running_pod()], result_size=99), NOW)
    assert (status["phase"], status["progress"]) == ("Completed", 100)
    assert status["result"]["size"] == 99
    assert status["completionTime"] == "2026-11-28T12:00:00Z"  # its own end, not the Job's

    bad = member("b", **batch.outcome_patch(INVALID_INPUT, "not audio: no stream")["status"])
    status = desired_status(bad, Observed(running_job(), [running_pod()]), NOW)
    assert (status["phase"], status["reason"], status["message"]) == (
        "Failed",
        "InvalidInput",
        "not audio: no stream",
    )


def test_a_member_without_outcome_follows_the_job() -> None:
    complete = {"type": "Complete", "status": "True"}
    kept = desired_status(member("c"), Observed(running_job(complete), result_size=5), NOW)
    assert kept["phase"] == "Completed"  # its outcome was lost; its result is there
    lost = desired_status(member("c"), Observed(running_job(complete)), NOW)
    assert (lost["phase"], lost["reason"]) == ("Failed", "SeparatorError")
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
    gave_up = desired_status(member("c"), Observed(running_job(failed)), NOW)
    assert gave_up["phase"] == "Failed"
