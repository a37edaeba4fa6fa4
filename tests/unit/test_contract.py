"""The SeparationJob CRD states the contract's catalogue (stemkube_contract): each option's type,
choices, default and bounds, the rules between options word for word, the key rule, the phases
and the resource's coordinates. A field added to one and not the other fails here. Also the
contract's own pure checks: object keys and deployment limits."""

import json
import re
from typing import Any

import pytest
import yaml

from stemkube_contract import keys, options, resource, scopes
from stemkube_contract.models import MAX_STEMS, MODEL_NAME_PATTERN, STEM_NAME_PATTERN, Catalog
from stemkube_contract.options import CATALOGUE, RULES, Option
from tests.harness.tools import REPO_ROOT

CRD_PATH = REPO_ROOT / "crds" / "separationjobs.stemkube.io.yaml"
EXAMPLES = REPO_ROOT / "crds" / "examples"
IMMUTABLE_RULE = "self == oldSelf"
# The spec's fields that are not separation options: where the song and result live, and how
# the Job is scheduled.
NON_OPTION_FIELDS = {
    "input",
    "output",
    "activeDeadlineSeconds",
    "ttlSecondsAfterFinished",
    "priorityClassName",
    "queueName",
    "workloadPriorityClass",
    "labels",
    "annotations",
    "webhook",
}


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def version_schema() -> dict[str, Any]:
    [version] = [v for v in load_crd()["spec"]["versions"] if v["name"] == resource.VERSION]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def spec_schema() -> dict[str, Any]:
    spec: dict[str, Any] = version_schema()["properties"]["spec"]
    return spec


def crd_defaults(option: Option) -> bool:
    """Whether the CRD defaults ``option``. Never one that applies only with another option's
    value: the CRD's CEL rules see its defaults, so a defaulted bitrate would break the rule
    "bitrate applies only with format mp3" for every WAV job; the separator fills it instead."""
    return option.cr_default and option.default is not None and option.only_with is None


@pytest.mark.parametrize("option", CATALOGUE, ids=lambda o: o.name)
def test_each_option_is_the_crd_property_of_its_cr_name(option: Option) -> None:
    properties = spec_schema()["properties"]
    assert option.cr in properties, f"the CRD has no spec.{option.cr} for option {option.name}"
    prop = properties[option.cr]

    assert prop["type"] == option.json_type
    if option.choices:
        assert prop.get("enum") == list(option.choices)
    else:
        assert "enum" not in prop
    if crd_defaults(option):
        assert "default" in prop, f"spec.{option.cr} has no default"
        assert prop["default"] == option.to_cr(option.default)  # type: ignore[arg-type]
        assert type(prop["default"]) is type(option.default)
        option.check(prop["default"])
    else:
        assert "default" not in prop, f"spec.{option.cr}: the catalogue gives it no CRD default"
    if option.kind in ("int", "float"):
        assert (prop.get("minimum"), prop.get("maximum")) == (option.minimum, option.maximum)
    else:
        assert "minimum" not in prop
        assert "maximum" not in prop
    if option.kind == "model":
        assert prop.get("pattern") == MODEL_NAME_PATTERN
    elif option.kind == "stem":
        assert prop.get("pattern") == STEM_NAME_PATTERN
    elif option.kind == "stems":
        assert prop["items"] == {"type": "string", "pattern": STEM_NAME_PATTERN}
        assert prop.get("minItems") == 1
        assert prop.get("x-kubernetes-list-type") == "set"
    else:
        assert "pattern" not in prop
    assert prop.get("description"), f"spec.{option.cr} has no description"


def test_only_the_catalogue_s_defaults_are_crd_defaults() -> None:
    """The operator and separator fill the others: the deployment's model, the format's
    bitrate or sample format."""
    properties = spec_schema()["properties"]
    defaulted = {name for name, prop in properties.items() if "default" in prop}
    assert defaulted == {o.cr for o in CATALOGUE if crd_defaults(o)}
    assert "default" not in properties["model"]


def test_every_spec_field_is_an_option_or_a_known_non_option() -> None:
    fields = set(spec_schema()["properties"])
    option_fields = {o.cr for o in CATALOGUE}
    assert not option_fields & NON_OPTION_FIELDS
    unknown = fields - option_fields - NON_OPTION_FIELDS
    assert not unknown, f"spec fields without a catalogue entry: {sorted(unknown)}"
    assert fields == option_fields | NON_OPTION_FIELDS


def test_the_spec_rules_are_the_catalogue_s_rules_word_for_word() -> None:
    rules = spec_schema()["x-kubernetes-validations"]
    assert [r["rule"] for r in rules].count(IMMUTABLE_RULE) == 1
    crd = sorted(
        (r["rule"], r.get("fieldPath"), r.get("message"))
        for r in rules
        if r["rule"] != IMMUTABLE_RULE
    )
    catalogue = sorted((r.cel, f".{options.BY_NAME[r.field].cr}", r.message) for r in RULES)
    assert crd == catalogue
    assert {rule for rule, _, _ in crd} == {r.cel for r in RULES}


def test_the_rules_name_only_spec_fields() -> None:
    properties = spec_schema()["properties"]
    for rule in RULES:
        named = set(re.findall(r"self\.(\w+)", rule.cel))
        assert named, rule.cel
        assert named <= set(properties), rule.cel
        assert f"self.{options.BY_NAME[rule.field].cr}" in rule.cel


@pytest.mark.parametrize("side", ["input", "output"])
def test_the_keys_carry_the_contract_s_key_rule(side: str) -> None:
    key = spec_schema()["properties"][side]["properties"]["key"]
    assert key["type"] == "string"
    assert (key["minLength"], key["maxLength"]) == (1, keys.MAX_KEY_LENGTH)
    # A CEL raw string ends at the first quote: the pattern must have none.
    assert "'" not in keys.BAD_KEY_PATTERN
    assert key["x-kubernetes-validations"] == [
        {
            "rule": f"!self.matches(r'{keys.BAD_KEY_PATTERN}')",
            "message": keys.KEY_RULE_MESSAGE,
        }
    ]
    assert side in spec_schema()["required"]


def test_status_phases_are_the_contract_s() -> None:
    phase = version_schema()["properties"]["status"]["properties"]["phase"]
    assert phase["enum"] == list(resource.PHASES)


def test_the_status_message_bound_is_the_contract_s() -> None:
    message = version_schema()["properties"]["status"]["properties"]["message"]
    assert message["maxLength"] == resource.MAX_STATUS_MESSAGE
    assert resource.bounded_message("x" * 5000).endswith("...")
    assert len(resource.bounded_message("x" * 5000)) == resource.MAX_STATUS_MESSAGE
    assert resource.bounded_message("short") == "short"


def test_the_crd_s_coordinates_are_the_contract_s() -> None:
    crd = load_crd()
    assert crd["metadata"]["name"] == f"{resource.PLURAL}.{resource.GROUP}"
    assert crd["spec"]["group"] == resource.GROUP
    assert crd["spec"]["names"]["plural"] == resource.PLURAL
    assert crd["spec"]["names"]["kind"] == resource.KIND
    [storage] = [v["name"] for v in crd["spec"]["versions"] if v["storage"]]
    assert storage == resource.VERSION
    assert f"{crd['spec']['group']}/{storage}" == resource.API_VERSION


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_examples_are_valid_under_the_contract(path: Any) -> None:
    example = yaml.safe_load(path.read_text())
    assert example["apiVersion"] == resource.API_VERSION
    assert example["kind"] == resource.KIND
    spec = example["spec"]
    for side in ("input", "output"):
        assert keys.key_problem(spec[side]["key"]) is None
    # Runnable as they are in namespace default under the chart's default storage scopes.
    assert scopes.refusal(spec, "default", scopes.default_scopes(scopes.DEFAULT_BUCKET)) is None
    options.validate(options.from_spec(spec), Catalog())


# Object keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "inputs/a/input.mp3",
        "results/x.zip",
        "a..b/c",
        "a/.b/c..",
        "x",
        "x" * keys.MAX_KEY_LENGTH,
        "é" * keys.MAX_KEY_LENGTH,  # characters, not bytes
    ],
)
def test_good_keys(key: str) -> None:
    assert keys.key_problem(key) is None


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "a/../b",
        "a/./b",
        "./a",
        "a/..",
        "..",
        "/abs",
        "a//b",
        "a/",
        "a\\b",
        "a\x01b",
        "a\x00b",
        "a\x7fb",
        "a\nb",
        "",
        "x" * (keys.MAX_KEY_LENGTH + 1),
    ],
)
def test_bad_keys(key: str) -> None:
    assert keys.key_problem(key)


def test_a_bad_key_is_explained_by_the_rule_message() -> None:
    assert keys.key_problem("a//b") == keys.KEY_RULE_MESSAGE
    assert "1 to 1024" in (keys.key_problem("") or "")


# Deployment limits ----------------------------------------------------------------------------


def test_limits_within_the_hard_bounds_are_read() -> None:
    limits = options.parse_limits('{"shifts": 4, "overlap": 0.5}')
    assert limits.maxima == {"shifts": 4.0, "overlap": 0.5}
    assert limits.maximum(options.BY_NAME["shifts"]) == 4
    limits.check({"shifts": 4, "overlap": 0.5})
    with pytest.raises(options.OptionError) as refused:
        limits.check({"shifts": 5})
    assert refused.value.field == "shifts"


def test_no_limits_leave_the_hard_bounds() -> None:
    for text in ("", "  ", "{}"):
        limits = options.parse_limits(text)
        assert not limits.maxima
        for option in options.limited_options():
            assert limits.maximum(option) == option.maximum


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"speed": 2}', "'speed' has no limit"),
        ('{"format": "wav"}', "'format' has no limit"),
        ('{"bitrate": 128}', "'bitrate' has no limit"),
        ('{"shifts": 11}', "not between 0 and 10"),
        ('{"overlap": 0.95}', "not between 0 and 0.9"),
        ('{"shifts": -1}', "not between"),
        ('{"shifts": 2.5}', "not a whole number"),
        ('{"shifts": "4"}', "not a number"),
        ("[4]", "expected an object"),
        ("{shifts: 4}", "not JSON"),
    ],
)
def test_bad_limits_are_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)) as refused:
        options.parse_limits(text)
    assert str(refused.value).startswith(f"{options.LIMITS_ENV}: ")


def test_a_limit_below_the_default_is_refused_and_defaults_count_against_limits() -> None:
    with pytest.raises(ValueError, match="below the default"):
        options.parse_limits('{"overlap": 0.1}')
    limits = options.parse_limits('{"shifts": 1}')
    assert options.validate({}, Catalog(), limits) == {}
    with pytest.raises(options.OptionError, match="more than this deployment allows"):
        options.validate({"shifts": 2}, Catalog(), limits)


def test_the_number_of_stems_is_the_crds() -> None:
    stems = spec_schema()["properties"]["stems"]
    assert stems["maxItems"] == MAX_STEMS
    options.BY_NAME["stems"].check([f"s{i}" for i in range(MAX_STEMS)])
    with pytest.raises(options.OptionError, match=f"1 to {MAX_STEMS} stems"):
        options.BY_NAME["stems"].check([f"s{i}" for i in range(MAX_STEMS + 1)])


def test_names_with_a_trailing_newline_are_refused() -> None:
    for bad in ("htdemucs\n", "vocals\n"):
        with pytest.raises(options.OptionError):
            options.BY_NAME["model" if bad.startswith("h") else "two_stems"].check(bad)
    assert not keys.valid_job_id("abc\n")


def test_the_charts_values_schema_states_the_contracts_names_and_limits() -> None:
    schema = json.loads((REPO_ROOT / "charts/stemkube/values.schema.json").read_text())
    limits = schema["properties"]["limits"]["properties"]
    assert set(limits) == {o.name for o in options.limited_options()}
    for option in options.limited_options():
        bounds = (limits[option.name]["minimum"], limits[option.name]["maximum"])
        assert bounds == (option.minimum, option.maximum)
        assert limits[option.name]["type"] == option.json_type
    model = schema["properties"]["models"]["items"]["properties"]
    assert model["name"]["pattern"] == MODEL_NAME_PATTERN
    assert model["sources"]["items"]["pattern"] == STEM_NAME_PATTERN
    values = yaml.safe_load((REPO_ROOT / "charts/stemkube/values.yaml").read_text())
    options.parse_limits(json.dumps(values["limits"]))  # the chart's defaults are valid limits
    precision = schema["properties"]["separator"]["properties"]["precision"]
    assert precision["enum"] == list(options.PRECISIONS)
    assert values["separator"]["precision"] == options.DEFAULT_PRECISION
