"""Sizes as people write them (``MAX_FILE_SIZE=100MB``) and back: the contract's, which the
separator and the operator read too, so that every part means the same bytes by a limit."""

from stemkube_contract.limits import format_size, parse_size

__all__ = ["format_size", "parse_size"]
