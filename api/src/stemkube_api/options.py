"""The upload's separation options, read from form fields with the contract's catalogue: a bad
request is a 422 naming the field rather than a SeparationJob the API server or the operator
refuses. The options, their rules and defaults live in ``stemkube_contract.options``."""

from collections.abc import Mapping

from stemkube_contract import options as catalogue
from stemkube_contract.models import Catalog
from stemkube_contract.options import NAMES as FIELDS
from stemkube_contract.options import Limits, OptionError, Options

__all__ = ["FIELDS", "OptionError", "Options", "check_field", "parse_request"]


def check_field(field: str, raw: str) -> None:
    """The checks of one field alone, made as soon as it arrives (before the file is stored)."""
    catalogue.parse_fields({field: raw})


def parse_request(
    fields: Mapping[str, str], models: Catalog | None = None, limits: Limits | None = None
) -> Options:
    """Form fields -> the options given (defaults stay implicit), or OptionError. Empty fields
    count as absent (an HTML form sends every input)."""
    return catalogue.validate(catalogue.parse_fields(fields), models or Catalog(), limits)
