"""Sizes as people write them (``MAX_FILE_SIZE=100MB``) and back."""

import re

# Binary multiples, as nginx's client_max_body_size and Docker read "MB": 100MB = 100 MiB.
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """``"500MB"`` -> 524288000; ``"1.5GB"``, ``"100 MiB"``, ``"1048576"`` work too.
    Raises ValueError naming what is wrong."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (expected e.g. 100MB, 1.5GB, 1048576)")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown size unit {unit!r} in {text!r} (use B, KB, MB, GB or TB)")
    value = int(float(number) * factor)
    if value <= 0:
        raise ValueError(f"a size must be positive, not {text!r}")
    return value


def format_size(size: int) -> str:
    """524288000 -> ``"500MB"``; 1610612736 -> ``"1.5GB"``; 1000 -> ``"1000B"``."""
    for unit, factor in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            value = size / factor
            text = f"{value:.2f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return f"{size}B"
