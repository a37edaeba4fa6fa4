"""The contract's words for batches: the CRD's outcome field, the members annotation, the
operator's setting and local mode's worker protocol."""

import pytest

from stemkube_contract import batch, exitcodes
from tests.unit.test_contract import version_schema


def test_the_crd_declares_the_outcome_as_the_contract_writes_it() -> None:
    outcome = version_schema()["properties"]["status"]["properties"][batch.OUTCOME_FIELD]
    assert outcome["properties"]["message"]["maxLength"] == batch.MAX_OUTCOME_MESSAGE
    assert outcome["properties"]["exitCode"]["maximum"] == 255
    written = batch.outcome_patch(exitcodes.INVALID_INPUT, "x" * 5000)["status"]
    assert len(written[batch.OUTCOME_FIELD]["message"]) == batch.MAX_OUTCOME_MESSAGE
    parsed = batch.outcome_of(written)
    assert parsed is not None
    assert parsed.exit_code == exitcodes.INVALID_INPUT
    assert batch.outcome_of({}) is None
    assert batch.outcome_of({batch.OUTCOME_FIELD: {"exitCode": "0"}}) is None


def test_members_survive_the_annotation_and_malformed_ones_mean_no_batch() -> None:
    members = [batch.Member("a", "u1"), batch.Member("b", "u2")]
    assert batch.decode_members(batch.encode_members(members)) == members
    for bad in (None, "", "not json", '{"a": 1}', '[{"name": "a"}]'):
        assert batch.decode_members(bad) == []


def test_the_operators_setting_is_bounded() -> None:
    assert batch.parse_max_per_job(None) == batch.DEFAULT_MAX_PER_JOB
    assert batch.parse_max_per_job(" 8 ") == 8
    for bad in ("0", "33", "four"):
        with pytest.raises(ValueError, match=batch.MAX_PER_JOB_ENV):
            batch.parse_max_per_job(bad)


def test_the_worker_protocol_round_trips() -> None:
    request = batch.serve_request(["in.mp3", "out.zip", "--job-id=j"], "/tmp/j.log")
    assert request.endswith("\n")
    assert request.count("\n") == 1
    assert batch.parse_serve_request(request) == (["in.mp3", "out.zip", "--job-id=j"], "/tmp/j.log")
    with pytest.raises(ValueError, match="request"):
        batch.parse_serve_request('{"argv": [1], "log": "x"}')
    assert batch.parse_serve_reply(batch.serve_reply(3)) == 3
    assert batch.parse_serve_reply("garbage") is None
