"""The upload's separation options: checked here with the CRD's own rules, so that a bad request
is a 422 naming the field rather than a SeparationJob the API server refuses."""

from collections.abc import Mapping
from dataclasses import dataclass

MODELS = (
    "htdemucs",
    "htdemucs_ft",
    "htdemucs_6s",
    "hdemucs_mmi",
    "mdx",
    "mdx_extra",
    "mdx_q",
    "mdx_extra_q",
)
DEFAULT_MODEL = "htdemucs"
FOUR_STEMS = ("vocals", "drums", "bass", "other")
SIX_STEMS = (*FOUR_STEMS, "guitar", "piano")
SIX_STEM_MODEL = "htdemucs_6s"
FORMATS = ("mp3", "wav", "flac")
DEFAULT_FORMAT = "mp3"
# LAME's constant bitrates for 44.1 kHz stereo: what the separator accepts.
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
DEFAULT_BITRATE = 320

FIELDS = ("model", "stems", "two_stems", "format", "bitrate")


class OptionError(ValueError):
    """A bad option; ``field`` is the form field to blame."""

    def __init__(self, field: str, message: str, later_fields_may_fix: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        # True when a field not given yet could make the request valid (a model after the
        # stems): an upload checks what it has before the file, and everything after it.
        self.later_fields_may_fix = later_fields_may_fix


@dataclass(frozen=True)
class SeparationRequest:
    """What to do with an uploaded song; None: the default."""

    model: str | None = None
    stems: tuple[str, ...] | None = None
    two_stems: str | None = None
    format: str | None = None
    bitrate: int | None = None

    @property
    def effective_model(self) -> str:
        return self.model or DEFAULT_MODEL

    @property
    def effective_format(self) -> str:
        return self.format or DEFAULT_FORMAT

    def output_stems(self) -> list[str]:
        return output_stems(self.effective_model, self.stems, self.two_stems)


def output_stems(model: str, stems: tuple[str, ...] | None, two_stems: str | None) -> list[str]:
    """The stems in the result, as the separator names its ZIP's members."""
    if two_stems:
        return [two_stems, f"no_{two_stems}"]
    if stems:
        return list(stems)
    return list(SIX_STEMS if model == SIX_STEM_MODEL else FOUR_STEMS)


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise OptionError(field, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def check_field(field: str, raw: str) -> None:
    """The checks of one field alone, made as soon as it arrives (before the file is stored)."""
    _parse_field(field, raw)


def _parse_field(field: str, raw: str) -> object:
    value = raw.strip()
    if field == "model":
        return _one_of(field, value, MODELS)
    if field == "format":
        return _one_of(field, value.lower(), FORMATS)
    if field == "two_stems":
        return _one_of(field, value, SIX_STEMS)
    if field == "stems":
        names = tuple(s.strip() for s in value.split(",") if s.strip())
        if not names:
            raise OptionError(field, "give a comma-separated list of stems, e.g. vocals,drums")
        for name in names:
            _one_of(field, name, SIX_STEMS)
        if len(set(names)) != len(names):
            raise OptionError(field, f"a stem is named twice in {value!r}")
        return names
    if field == "bitrate":
        try:
            bitrate = int(value)
        except ValueError:
            raise OptionError(field, f"{raw!r} is not a whole number of kbit/s") from None
        if bitrate not in MP3_BITRATES:
            raise OptionError(field, f"{bitrate} is not one of {', '.join(map(str, MP3_BITRATES))}")
        return bitrate
    raise OptionError(field, f"unknown field; the form takes file, {', '.join(FIELDS)}")


def parse_request(fields: Mapping[str, str]) -> SeparationRequest:
    """Form fields -> SeparationRequest, or OptionError. Empty fields count as absent (an HTML
    form sends every input)."""
    given = {k: v for k, v in fields.items() if v.strip() != ""}
    for name in fields:
        if name not in FIELDS:
            raise OptionError(name, f"unknown field; the form takes file, {', '.join(FIELDS)}")
    parsed = {name: _parse_field(name, raw) for name, raw in given.items()}
    model = parsed.get("model")
    fmt = parsed.get("format")
    stems = parsed.get("stems")
    two_stems = parsed.get("two_stems")
    bitrate = parsed.get("bitrate")
    assert model is None or isinstance(model, str)
    assert fmt is None or isinstance(fmt, str)
    assert stems is None or isinstance(stems, tuple)
    assert two_stems is None or isinstance(two_stems, str)
    assert bitrate is None or isinstance(bitrate, int)
    if stems is not None and two_stems is not None:
        raise OptionError("two_stems", "give either stems or two_stems, not both")
    effective_model = model or DEFAULT_MODEL
    if effective_model != SIX_STEM_MODEL:
        for name in (*(stems or ()), *((two_stems,) if two_stems else ())):
            if name not in FOUR_STEMS:
                field = "stems" if stems else "two_stems"
                raise OptionError(
                    field,
                    f"the {name} stem needs model {SIX_STEM_MODEL} (model is {effective_model})",
                    later_fields_may_fix=model is None,
                )
    if bitrate is not None and (fmt or DEFAULT_FORMAT) != "mp3":
        raise OptionError("bitrate", f"bitrate applies only with format mp3 (format is {fmt})")
    return SeparationRequest(
        model=model, stems=stems, two_stems=two_stems, format=fmt, bitrate=bitrate
    )
