"""The real API server admits a SeparationJob exactly when the contract's CRD-level checks do:
each option's own check (type, choices, bounds, name pattern), the rules between options
(CEL), and the key rule (CEL with the contract's RE2 pattern). Server-side dry run only, in
one namespace: nothing is stored, no operator runs.

What depends on the deployment (which models it declares, their stems, its limits) is the
operator's to check, not the CRD's: such specs are admitted here."""

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from stemkube_contract import keys, options, resource
from stemkube_contract.models import PRETRAINED, Catalog, Model
from tests.harness.fixtures import Cluster, temporary_namespace

pytestmark = pytest.mark.integration

CUSTOM = Model("my-custom.v2", ("vocals", "accompaniment"), description="a declared model")
CATALOG = Catalog((*PRETRAINED, CUSTOM))
INPUT_KEY, OUTPUT_KEY = "inputs/j/input.mp3", "results/j.zip"


@dataclass(frozen=True)
class Verdict:
    """The contract's word on a spec at admission: None to admit it, else the texts the API
    server's refusal must contain (the field, and the rule's message where a rule refuses)."""

    refusal: tuple[str, ...] | None
    # Whether the operator would run it in a deployment serving CATALOG: stricter than the CRD.
    operator_admits: bool


def contract_verdict(spec: dict[str, Any]) -> Verdict:
    refusal = crd_level_refusal(spec)
    operator_admits = refusal is None
    if operator_admits:
        try:
            options.validate(options.from_spec(spec), CATALOG, None)
        except options.OptionError:
            operator_admits = False
    return Verdict(refusal, operator_admits)


def crd_level_refusal(spec: dict[str, Any]) -> tuple[str, ...] | None:
    for side in ("input", "output"):
        problem = keys.key_problem(spec[side]["key"])
        if problem == keys.KEY_RULE_MESSAGE:
            return f"spec.{side}.key", problem
        if problem:
            return (f"spec.{side}.key",)
    try:
        given = options.from_spec(spec)  # each option's own check
    except options.OptionError as exc:
        return (f"spec.{options.BY_NAME[exc.field].cr}",)
    full = {**options.effective(given, CATALOG), **given}
    for rule in options.RULES:
        if not rule.holds(full):
            return f"spec.{options.BY_NAME[rule.field].cr}", rule.message
    return None


def body(input_key: str = INPUT_KEY, output_key: str = OUTPUT_KEY, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": {"name": "probe"},
        "spec": {
            "input": {"bucket": "stemkube", "key": input_key},
            "output": {"bucket": "stemkube", "key": output_key},
            **copy.deepcopy(fields),
        },
    }


def case(case_id: str, **fields: Any) -> Any:
    return pytest.param(body(**fields), id=case_id)


CASES = [
    case("defaults"),
    # bitrate: the catalogue's choices, only with mp3
    case("bitrate-128", bitrate=128),
    case("bitrate-320-mp3", format="mp3", bitrate=320),
    case("bitrate-100-not-lame", bitrate=100),
    case("bitrate-with-wav", format="wav", bitrate=128),
    case("bitrate-as-text", bitrate="128"),
    # wavDepth: wav and flac; flac stores integers
    case("wavdepth-24-flac", format="flac", wavDepth="24"),
    case("wavdepth-32f-flac", format="flac", wavDepth="32f"),
    case("wavdepth-32f-wav", format="wav", wavDepth="32f"),
    case("wavdepth-with-default-mp3", wavDepth="16"),
    case("wavdepth-with-mp3", format="mp3", wavDepth="24"),
    case("wavdepth-8", format="wav", wavDepth="8"),
    case("format-ogg", format="ogg"),
    case("format-flac", format="flac"),
    # stems and twoStems: names by pattern, not both
    case("stems-and-two-stems", stems=["vocals"], twoStems="drums"),
    case("stems", stems=["vocals", "drums"]),
    case("two-stems", twoStems="vocals"),
    case("stems-of-another-model", stems=["guitar"]),  # the operator's to refuse
    case("stems-of-the-custom-model", model="my-custom.v2", stems=["accompaniment"]),
    case("stems-bad-name", stems=["Kazoo"]),
    case("stems-empty", stems=[]),
    case("stems-twice", stems=["vocals", "vocals"]),
    case("two-stems-bad-name", twoStems="no-vocals"),
    # shifts and overlap: the catalogue's hard bounds
    case("shifts-0", shifts=0),
    case("shifts-10", shifts=10),
    case("shifts-11", shifts=11),
    case("shifts-negative", shifts=-1),
    case("overlap-0", overlap=0),
    case("overlap-0.9", overlap=0.9),
    case("overlap-0.95", overlap=0.95),
    # model: any well-formed name (which are declared is the deployment's)
    case("model-custom", model="my-custom.v2"),
    case("model-undeclared", model="spleeter"),
    case("model-bad-name", model="bad name"),
    case("model-too-long", model="m" * 64),
    case(
        "everything",
        model="htdemucs_6s",
        stems=["guitar", "piano"],
        format="wav",
        wavDepth="24",
        shifts=2,
        overlap=0.5,
    ),
    # keys: relative paths of plain segments
    case("key-parent", input_key="../x"),
    case("key-parent-inside", input_key="a/../b"),
    case("key-empty-segment", output_key="a//b"),
    case("key-absolute", output_key="/abs"),
    case("key-trailing-slash", input_key="a/"),
    case("key-backslash", input_key="a\\b"),
    case("key-control", output_key="a\x01b"),
    case("key-delete", output_key="a\x7fb"),
    case("key-dots-in-a-name", input_key="a..b/c"),
    case("key-longest", input_key="é" * keys.MAX_KEY_LENGTH),
    case("key-too-long", input_key="x" * (keys.MAX_KEY_LENGTH + 1)),
    case("model-trailing-newline", model="htdemucs\n"),
    case("stems-more-than-32", stems=[f"s{i}" for i in range(33)]),
    case("stems-32", stems=[f"s{i}" for i in range(32)]),
]


@pytest.fixture(scope="module")
def contract_namespace(cluster: Cluster, separation_crd: None) -> Iterator[str]:
    """One namespace for every dry run of this module."""
    with temporary_namespace(cluster, "contract") as name:
        yield name


def dry_run_create(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> str | None:
    """None when the API server admits ``manifest``; its refusal's text otherwise."""
    try:
        client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
            resource.GROUP, resource.VERSION, namespace, resource.PLURAL, manifest, dry_run="All"
        )
    except client.ApiException as exc:
        if exc.status != 422:  # Unprocessable: the schema or a rule refused it
            raise
        return str(json.loads(exc.body)["message"])
    return None


@pytest.mark.parametrize("manifest", CASES)
def test_the_api_server_admits_exactly_what_the_contract_admits(
    cluster: Cluster, contract_namespace: str, manifest: dict[str, Any]
) -> None:
    verdict = contract_verdict(manifest["spec"])
    # What the operator runs, the API server must admit.
    assert verdict.refusal is None or not verdict.operator_admits

    refused = dry_run_create(cluster, contract_namespace, manifest)

    if verdict.refusal is None:
        assert refused is None, f"the contract admits it, the API server refused: {refused}"
    else:
        assert refused is not None, f"the contract refuses it ({verdict.refusal}), the API admits"
        for words in verdict.refusal:
            assert words in refused
