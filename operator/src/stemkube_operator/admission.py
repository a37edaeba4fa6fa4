"""Whether a SeparationJob may run at all, decided before any Job (or GPU) is spent on it: what
it puts on its pod (``podpolicy``), its object keys and whether they lie in its namespace's
storage (``stemkube_contract.scopes``), its options against the contract's catalogue, the models
and limits of this deployment. Pure."""

from typing import Any

from stemkube_contract import options as catalogue
from stemkube_contract import urls
from stemkube_contract.keys import key_problem
from stemkube_contract.models import Catalog
from stemkube_contract.refusals import FORBIDDEN, INVALID_ARGUMENTS, UNKNOWN_MODEL
from stemkube_contract.scopes import Scopes
from stemkube_contract.scopes import refusal as scope_refusal
from stemkube_operator.podpolicy import PodPolicy
from stemkube_operator.podpolicy import refusal as pod_refusal


def refusal(
    spec: dict[str, Any],
    models: Catalog,
    limits: catalogue.Limits,
    policy: PodPolicy | None = None,
    namespace: str | None = None,
    scopes: Scopes | None = None,
) -> tuple[str, str] | None:
    """(reason, message) when the spec cannot run here; None when it may. An escalation
    (``podpolicy``: reason Forbidden) is told first. A URL input's form is checked here
    (``urls.url_problem``: the CRD's pattern says less); its addresses are the separator's to
    check, when it resolves them. With ``namespace`` and ``scopes`` (the operator always gives
    them), an object outside the namespace's storage is Forbidden."""
    refused = pod_refusal(spec, policy or PodPolicy())
    if refused:
        return refused
    url = (spec.get("input") or {}).get("url")
    if url:
        problem = urls.url_problem(str(url))
        if problem:
            return INVALID_ARGUMENTS, f"spec.input.url: {problem}"
    for side in ("output",) if url else ("input", "output"):
        ref = spec.get(side) or {}
        problem = key_problem(str(ref.get("key", "")))
        if problem:
            return INVALID_ARGUMENTS, f"spec.{side}.key {ref.get('key')!r}: {problem}"
    # After the keys' form: a key with no ".." segment cannot leave a prefix it starts with.
    if namespace is not None and scopes is not None:
        outside = scope_refusal(spec, namespace, scopes)
        if outside:
            return FORBIDDEN, outside
    try:
        catalogue.validate(catalogue.from_spec(spec), models, limits)
    except catalogue.OptionError as exc:
        reason = UNKNOWN_MODEL if exc.field == "model" else INVALID_ARGUMENTS
        field = catalogue.BY_NAME[exc.field].cr if exc.field in catalogue.BY_NAME else exc.field
        message = exc.message
        return reason, message if message.startswith("spec.") else f"spec.{field}: {message}"
    return None
