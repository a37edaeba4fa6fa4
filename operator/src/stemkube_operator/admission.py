"""Whether a SeparationJob may run at all, decided before any Job (or GPU) is spent on it: its
options against the contract's catalogue, the models and limits of this deployment, and its
object keys. Pure."""

from typing import Any

from stemkube_contract import options as catalogue
from stemkube_contract import urls
from stemkube_contract.keys import key_problem
from stemkube_contract.models import Catalog

UNKNOWN_MODEL = "UnknownModel"
INVALID_ARGUMENTS = "InvalidArguments"


def refusal(
    spec: dict[str, Any], models: Catalog, limits: catalogue.Limits
) -> tuple[str, str] | None:
    """(reason, message) when the spec cannot run here; None when it may. A URL input's form
    is checked here (``urls.url_problem``: the CRD's pattern says less); its addresses are the
    separator's to check, when it resolves them."""
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
    try:
        catalogue.validate(catalogue.from_spec(spec), models, limits)
    except catalogue.OptionError as exc:
        reason = UNKNOWN_MODEL if exc.field == "model" else INVALID_ARGUMENTS
        field = catalogue.BY_NAME[exc.field].cr if exc.field in catalogue.BY_NAME else exc.field
        message = exc.message
        return reason, message if message.startswith("spec.") else f"spec.{field}: {message}"
    return None
