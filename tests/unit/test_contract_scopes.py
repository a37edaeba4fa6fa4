"""Storage scopes (``stemkube_contract.scopes``): which objects a namespace's SeparationJobs may
name, the setting's parsing, and the refusal's message."""

import datetime
import json

import pytest

from stemkube_contract import keys, scopes, usage
from stemkube_contract.scopes import Scope, Scopes, parse_scopes, refusal


def spec(
    input_bucket: str, input_key: str, output_bucket: str, output_key: str
) -> dict[str, object]:
    return {
        "input": {"bucket": input_bucket, "key": input_key},
        "output": {"bucket": output_bucket, "key": output_key},
    }


def test_by_default_a_namespace_names_only_its_own_prefix_of_the_release_bucket() -> None:
    default = parse_scopes("", "stemkube")
    assert default.of("team-a") == Scope("stemkube", "team-a/")
    assert (
        refusal(spec("stemkube", "team-a/in.wav", "stemkube", "team-a/out.zip"), "team-a", default)
        is None
    )
    for bad in (
        spec(
            "stemkube", "team-b/private/song.wav", "stemkube", "team-a/out.zip"
        ),  # another's input
        spec("stemkube", "team-a/in.wav", "stemkube", "stolen/out.zip"),  # writes elsewhere
        spec("other", "team-a/in.wav", "stemkube", "team-a/out.zip"),  # another bucket
        spec("stemkube", "team-a/in.wav", "stemkube", "etc/passwd"),
        spec("stemkube", "team-ab/in.wav", "stemkube", "team-a/out.zip"),  # a longer name
        spec("stemkube", "team-a", "stemkube", "team-a/out.zip"),  # the prefix without its /
    ):
        message = refusal(bad, "team-a", default)
        assert message is not None
        assert "s3://stemkube/team-a/" in message, message


def test_a_url_input_is_no_object_and_only_the_output_is_checked() -> None:
    default = parse_scopes("", "stemkube")
    url_spec = {
        "input": {"url": "https://example.com/a.mp3"},
        "output": {"bucket": "stemkube", "key": "ns/o.zip"},
    }
    assert refusal(url_spec, "ns", default) is None
    url_spec["output"] = {"bucket": "stemkube", "key": "elsewhere/o.zip"}
    assert refusal(url_spec, "ns", default) == (
        "spec.output s3://stemkube/elsewhere/o.zip is outside the storage of namespace ns: "
        "SeparationJobs there may name objects in s3://stemkube/ns/ only "
        "(the chart's storageScopes)"
    )


def test_listed_namespaces_the_default_template_and_turning_confinement_off() -> None:
    text = json.dumps(
        {
            "default": {"bucket": "songs", "prefix": "teams/{namespace}/"},
            "namespaces": {"studio": {"bucket": "studio-bucket", "prefix": ""}},
        }
    )
    parsed = parse_scopes(text, "ignored")
    assert parsed.of("x") == Scope("songs", "teams/x/")
    assert parsed.of("studio") == Scope("studio-bucket", "")
    assert parsed.of("studio").allows("studio-bucket", "anything/at/all")
    assert not parsed.of("studio").allows("songs", "teams/studio/a")
    assert parse_scopes(parsed.to_json(), "ignored") == parsed
    off = parse_scopes(json.dumps({"default": {"bucket": "*", "prefix": ""}}), "stemkube")
    assert off.of("any").allows("any-bucket", "any/key")
    assert off.of("any").describe() == "any object"
    assert Scopes(Scope("*", "p/")).of("n").describe() == "keys under p/ of any bucket"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "not JSON"),
        ("[]", "expected an object"),
        ('{"default": {"bucket": "b", "prefix": "no-slash"}}', "ending in '/'"),
        ('{"default": {"bucket": "b", "prefix": "../up/"}}', "plain segments"),
        ('{"default": {"bucket": "b", "prefix": "a//"}}', "plain segments"),
        ('{"default": {"bucket": "", "prefix": ""}}', "non-empty"),
        ('{"namespaces": {"a": {"bucket": "b", "prefix": "{namespace}/"}}}', "only in the default"),
        ('{"namespaces": {"a": {"prefix": "x/"}}}', "bucket"),
        ('{"extra": 1}', "expected an object"),
    ],
)
def test_a_wrong_setting_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=scopes.STORAGE_SCOPES_ENV) as raised:
        parse_scopes(text, "b")
    assert says in str(raised.value)


def test_keys_and_the_audio_ledger_live_under_the_root() -> None:
    """The API's keys and the operator's ledger entries under a namespace's prefix."""
    assert keys.input_key("job-1", "mp3", "acme", "songs/") == (
        "songs/tenants/acme/inputs/job-1/input.mp3"
    )
    assert keys.result_key("job-1", None, "songs/") == "songs/results/job-1.zip"
    assert keys.result_key("job-1") == "results/job-1.zip"  # no root: the layout before scopes
    for bad in ("songs", "../", "/songs/", "a//"):
        with pytest.raises(ValueError, match="not a key prefix"):
            keys.result_key("job-1", None, bad)
    entry = usage.Entry(
        "0123456789ab", datetime.datetime(2026, 11, 28, tzinfo=datetime.UTC), "a1-b2", 4.0
    )
    key = usage.usage_key(entry, "songs/")
    assert key.startswith("songs/usage/0123456789ab/")
    assert usage.parse_usage_key(key, "songs/") == entry
    assert usage.parse_usage_key(key) is None  # another root's entry is not this one's
    assert usage.parse_usage_key(key, "other/") is None
