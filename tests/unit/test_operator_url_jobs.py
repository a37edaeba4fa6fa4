"""SeparationJobs from a URL (``spec.input.url``): the CRD's form, the operator's admission, the
Job it builds (the URL in the pod's environment, never its arguments; the address rules with
it) and the batch key (a URL job shares no Job)."""

import re
from typing import Any

import pytest

from stemkube_contract import batch, urls
from stemkube_contract.addresses import ALLOW_CIDRS_ENV, DENY_CIDRS_ENV
from stemkube_contract.models import Catalog
from stemkube_contract.options import Limits
from stemkube_contract.refusals import INVALID_ARGUMENTS
from stemkube_operator.admission import refusal
from stemkube_operator.config import ConfigError, OperatorConfig, load_config
from stemkube_operator.jobspec import build_batch_job, build_job
from tests.unit.test_contract import spec_schema
from tests.unit.test_operator_jobspec import separation_job

URL = "https://cdn.example.com/song.mp3?X-Amz-Signature=topsecret"


def url_job(name: str = "job-1", url: str = URL) -> dict[str, Any]:
    cr = separation_job()
    cr["metadata"] = {**cr["metadata"], "name": name, "uid": f"u-{name}"}
    cr["spec"]["input"] = {"url": url, "filename": "song.mp3"}
    cr["spec"]["output"] = {"bucket": "stemkube", "key": f"results/{name}.zip"}
    return cr


def test_the_crd_takes_a_url_or_an_object() -> None:
    source = spec_schema()["properties"]["input"]
    assert "required" not in source  # the rule below says which fields
    [rule] = source["x-kubernetes-validations"]
    assert "has(self.url)" in rule["rule"]
    assert "has(self.bucket)" in rule["rule"]
    url = source["properties"]["url"]
    assert url["pattern"] == urls.URL_PATTERN
    assert url["maxLength"] == urls.MAX_URL_LENGTH
    pattern = re.compile(url["pattern"])
    for good in ("https://e.com/a.mp3?sig=1", "http://e.com", "https://[2606:4700::1]:8443/x"):
        assert pattern.match(good)
        assert urls.url_problem(good) is None
    for bad in ("ftp://e.com/a", "https://u:p@e.com/a", "https://e.com/a b", "e.com/a"):
        assert not pattern.match(bad)
        assert urls.url_problem(bad) is not None


def test_the_url_reaches_the_pod_in_its_environment_only() -> None:
    config = OperatorConfig()
    job = build_job(url_job(), config)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == [urls.INPUT_FROM_ENV, "s3://stemkube/results/job-1.zip"]
    assert "topsecret" not in str(container["args"])
    assert "topsecret" not in str(job["metadata"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[urls.INPUT_URL_ENV] == URL
    assert DENY_CIDRS_ENV not in env
    assert ALLOW_CIDRS_ENV not in env
    # An upload's Job has none of it.
    upload = build_job(separation_job(), config)["spec"]["template"]["spec"]["containers"][0]
    assert urls.INPUT_URL_ENV not in {e["name"] for e in upload["env"]}


def test_the_address_rules_go_with_the_url() -> None:
    config = load_config(
        {DENY_CIDRS_ENV: "10.96.0.0/12, 10.244.0.0/16", ALLOW_CIDRS_ENV: "127.0.0.0/8"}
    )
    container = build_job(url_job(), config)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[DENY_CIDRS_ENV] == "10.96.0.0/12,10.244.0.0/16"
    assert env[ALLOW_CIDRS_ENV] == "127.0.0.0/8"
    with pytest.raises(ConfigError, match=DENY_CIDRS_ENV):
        load_config({DENY_CIDRS_ENV: "the cluster"})


def test_admission_checks_the_url_s_form() -> None:
    assert refusal(url_job()["spec"], Catalog(), Limits()) is None
    bad = url_job(url="https://user:pw@e.com/a.mp3")["spec"]
    reason, message = refusal(bad, Catalog(), Limits()) or ("", "")
    assert reason == INVALID_ARGUMENTS
    assert message.startswith("spec.input.url: ")
    assert "pw" not in message


def test_a_url_job_shares_no_job() -> None:
    a, b = url_job("a", URL), url_job("b", URL)  # the same URL and options
    key_a = batch.batch_key("music", a["spec"])
    assert key_a != batch.batch_key("music", b["spec"])
    uploads = [separation_job(), separation_job()]
    uploads[1]["spec"]["input"] = {"bucket": "stemkube", "key": "inputs/j2/song.mp3"}
    assert batch.batch_key("music", uploads[0]["spec"]) == batch.batch_key(
        "music", uploads[1]["spec"]
    )
    # Alone, a URL job's "batch" is its own Job.
    assert build_batch_job([a], OperatorConfig()) == build_job(a, OperatorConfig())
