"""The separation options, each stated once: its REST field, SeparationJob field and separator
flag, its type, allowed values, default and bounds, and the rules between options. Everything
else derives from this table: the upload form and its OpenAPI schema, the client's flags, the
CR spec the API writes, the operator's admission check and the separator's command line and
argparse, local mode's command line, and (checked by the contract test) the CRD's schema.

Adding an option: one ``Option`` below, its CRD property (``crds/`` and the chart's copy), and
its use in the separator."""

import argparse
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from stemkube_contract.models import (
    MAX_STEMS,
    Catalog,
    model_name_problem,
    output_stems,
    stem_name_problem,
)

Value = str | int | float | tuple[str, ...]
# The model's arithmetic: a deployment's setting (the chart's separator.precision, local mode's
# --precision), not a job's option; auto is TF32 on GPUs that have it, else fp32.
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
DEFAULT_PRECISION = "auto"
PRECISION_ENV = "STEMKUBE_PRECISION"
Options = dict[str, Value]
Kind = Literal["model", "stems", "stem", "choice", "int", "float"]
LIMITS_ENV = "STEMKUBE_LIMITS"


class OptionError(ValueError):
    """A bad option; ``field`` is the option to blame (its REST name)."""

    def __init__(self, field: str, message: str, later_fields_may_fix: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        # True when an option not given yet could make the request valid (a model after the
        # stems): an upload checks what it has before the file, and everything after it.
        self.later_fields_may_fix = later_fields_may_fix


@dataclass(frozen=True)
class Option:
    name: str  # REST form field, client flag --name, and the key in Options
    cr: str  # the SeparationJob spec's field
    flag: str  # the separator's flag
    kind: Kind
    description: str
    default: Value | None = None  # None: none (the model's own stems; the deployment's model)
    choices: tuple[str | int, ...] = ()
    minimum: float | None = None
    maximum: float | None = None  # the hard bound (the CRD's); a deployment may lower it
    # The option means something only when another has one of these values.
    only_with: tuple[str, tuple[str, ...]] | None = None
    conflicts: str | None = None  # may not be given together with this option
    # The model's default is the deployment's, so the CRD states none; an option that applies
    # only with another's value has none either (the CRD's rules see its defaults).
    cr_default: bool = True
    limitable: bool = False  # costly: a deployment may set a lower maximum (limits)

    @property
    def integral_choice(self) -> bool:
        return self.kind == "choice" and bool(self.choices) and isinstance(self.choices[0], int)

    @property
    def json_type(self) -> str:
        if self.integral_choice:
            return "integer"
        return {"int": "integer", "float": "number", "stems": "array"}.get(self.kind, "string")

    def parse(self, raw: str) -> Value:
        """Text (a form field, a flag) -> the option's value, or OptionError."""
        text = raw.strip()
        if self.kind == "stems":
            names = tuple(s.strip() for s in text.split(",") if s.strip())
            if not names:
                raise OptionError(
                    self.name, "give a comma-separated list of stems, e.g. vocals,drums"
                )
            return self.check(names)
        if self.kind == "int":
            try:
                number: int | float = int(text)
            except ValueError:
                raise OptionError(self.name, f"{raw!r} is not a whole number") from None
            return self.check(number)
        if self.kind == "float":
            try:
                number = float(text)
            except ValueError:
                raise OptionError(self.name, f"{raw!r} is not a number") from None
            return self.check(number)
        if self.integral_choice:
            try:
                whole = int(text)
            except ValueError:
                raise OptionError(self.name, f"{raw!r} is not a whole number") from None
            return self.check(whole)
        return self.check(text.lower() if self.kind == "choice" else text)

    def check(self, value: object) -> Value:
        """A typed value (JSON, a CR field) -> the option's value, or OptionError."""
        if self.kind == "stems":
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise OptionError(self.name, "give a list of stems")
            names = tuple(value)
            if not 0 < len(names) <= MAX_STEMS:
                raise OptionError(self.name, f"give 1 to {MAX_STEMS} stems")
            for name in names:
                problem = stem_name_problem(name) if isinstance(name, str) else "not a string"
                if problem:
                    raise OptionError(self.name, problem)
            if len(set(names)) != len(names):
                raise OptionError(self.name, f"a stem is named twice in {','.join(names)!r}")
            return names
        if self.kind in ("int", "float") or self.integral_choice:
            integral = self.kind == "int" or self.kind == "choice"
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise OptionError(self.name, f"{value!r} is not a number")
            if integral and (isinstance(value, float) and not value.is_integer()):
                raise OptionError(self.name, f"{value!r} is not a whole number")
            number: int | float = int(value) if integral else float(value)
            if isinstance(number, float) and not math.isfinite(number):
                raise OptionError(self.name, f"{value!r} is not a finite number")
            self._in_range(number)
            return number
        if not isinstance(value, str):
            raise OptionError(self.name, f"{value!r} is not a string")
        if self.kind == "model":
            problem = model_name_problem(value)
        elif self.kind == "stem":
            problem = stem_name_problem(value)
        else:
            problem = None
            if value not in self.choices:
                allowed = ", ".join(map(str, self.choices))
                problem = f"{value!r} is not one of {allowed}"
        if problem:
            raise OptionError(self.name, problem)
        return value

    def _in_range(self, number: int | float) -> None:
        if self.choices:
            if number not in self.choices:
                allowed = ", ".join(map(str, self.choices))
                raise OptionError(self.name, f"{number} is not one of {allowed}")
            return
        low, high = self.minimum, self.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            raise OptionError(self.name, f"{number} is not between {low:g} and {high:g}")

    def text(self, value: Value) -> str:
        """The value as a flag or form field writes it."""
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)

    def to_cr(self, value: Value) -> Any:
        return list(value) if isinstance(value, tuple) else value


MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)

CATALOGUE: tuple[Option, ...] = (
    Option(
        "model", "model", "--model", "model",
        "Demucs model; GET /models lists what this deployment serves (default: its default).",
        cr_default=False,
    ),
    Option(
        "stems", "stems", "--stems", "stems",
        "The stems to keep (default: all of the model's), e.g. vocals,drums.",
        conflicts="two_stems",
    ),
    Option(
        "two_stems", "twoStems", "--two-stems", "stem",
        "Split into this stem and everything else (no_<stem>).",
        conflicts="stems",
    ),
    Option(
        "format", "format", "--format", "choice", "Audio format of the stems.",
        default="mp3", choices=("mp3", "wav", "flac"),
    ),
    Option(
        "bitrate", "bitrate", "--bitrate", "choice",
        "MP3 bitrate in kbit/s (LAME's constant bitrates).",
        default=320, choices=MP3_BITRATES, only_with=("format", ("mp3",)), cr_default=False,
    ),
    Option(
        "wav_depth", "wavDepth", "--wav-depth", "choice",
        "Sample format of WAV and FLAC stems (FLAC: 16 or 24).",
        default="16", choices=("16", "24", "32f"), only_with=("format", ("wav", "flac")),
        cr_default=False,
    ),
    Option(
        "shifts", "shifts", "--shifts", "int",
        "Random time shifts averaged per prediction: better and proportionally slower.",
        default=1, minimum=0, maximum=10, limitable=True,
    ),
    Option(
        "overlap", "overlap", "--overlap", "float",
        "Overlap between the model's segments: more is smoother and slower.",
        default=0.25, minimum=0.0, maximum=0.9, limitable=True,
    ),
    Option(
        "segment", "segment", "--segment", "float",
        "Seconds of audio per model pass (default: the model's own): shorter needs less memory.",
        minimum=1.0, maximum=60.0, limitable=True,  # a deployment's bound on GPU memory
    ),
)  # fmt: skip
BY_NAME = {option.name: option for option in CATALOGUE}
BY_CR = {option.cr: option for option in CATALOGUE}
NAMES = tuple(BY_NAME)


@dataclass(frozen=True)
class Rule:
    """A rule between options: ``holds`` over the effective options, the same rule in CEL over
    the CR spec (after the CRD's defaults), and the option it blames."""

    field: str
    message: str
    holds: Callable[[Mapping[str, Value]], bool]
    cel: str
    # An option given where it does not apply (bitrate with wav): refused by the API and the
    # CRD; a program handed it (the separator) may ignore it.
    not_applicable: bool = False


def _only_with_rule(option: Option) -> Rule:
    assert option.only_with is not None
    other, values = option.only_with
    other_cr = BY_NAME[other].cr
    listed = ", ".join(f"'{v}'" for v in values)
    words = " or ".join(values)
    return Rule(
        option.name,
        f"{option.name} applies only with {other} {words}",
        lambda o: option.name not in o or o.get(other) in values,
        f"!has(self.{option.cr}) || self.{other_cr} in [{listed}]",
        not_applicable=True,
    )


def _conflict_rule(option: Option) -> Rule:
    assert option.conflicts is not None
    other = BY_NAME[option.conflicts]
    return Rule(
        option.name,
        f"give either {other.name} or {option.name}, not both",
        lambda o: not (option.name in o and other.name in o),
        f"!(has(self.{other.cr}) && has(self.{option.cr}))",
    )


RULES: tuple[Rule, ...] = (
    *(_only_with_rule(o) for o in CATALOGUE if o.only_with),
    *(_conflict_rule(o) for o in CATALOGUE if o.conflicts and o.conflicts < o.name),
    Rule(
        "wav_depth",
        "FLAC stores integers: wav_depth 16 or 24",
        lambda o: not (o.get("format") == "flac" and o.get("wav_depth") == "32f"),
        "!has(self.wavDepth) || self.format != 'flac' || self.wavDepth != '32f'",
    ),
)  # fmt: skip


# Deployment limits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """A deployment's maxima for the costly options (within the catalogue's hard bounds)."""

    maxima: Mapping[str, float] = field(default_factory=dict)

    def maximum(self, option: Option) -> float | None:
        return self.maxima.get(option.name, option.maximum)

    def check(self, options: Mapping[str, Value]) -> None:
        for name, top in self.maxima.items():
            value = options.get(name)
            if isinstance(value, int | float) and value > top:
                raise OptionError(name, f"{value} is more than this deployment allows ({top:g})")


def limited_options() -> tuple[Option, ...]:
    return tuple(o for o in CATALOGUE if o.limitable)


def parse_limits(text: str) -> Limits:
    """``{"shifts": 4, "overlap": 0.5}``: each a limited option, within its hard bound."""
    if not text.strip():
        return Limits()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{LIMITS_ENV}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{LIMITS_ENV}: expected an object of option: maximum")
    allowed = {o.name: o for o in limited_options()}
    maxima: dict[str, float] = {}
    for name, top in data.items():
        option = allowed.get(name)
        if option is None:
            raise ValueError(f"{LIMITS_ENV}: {name!r} has no limit; these do: {', '.join(allowed)}")
        try:
            option.check(top)
        except OptionError as exc:
            raise ValueError(f"{LIMITS_ENV}: {exc}") from None
        if isinstance(option.default, int | float) and top < option.default:
            raise ValueError(
                f"{LIMITS_ENV}: {name}: {top} is below the default, {option.default}: every job "
                "that names none would be refused"
            )
        maxima[name] = float(top)
    return Limits(maxima)


# Validation -----------------------------------------------------------------------------------


def parse_fields(fields: Mapping[str, str]) -> Options:
    """Text fields (a form, flags) -> options, each checked alone. Empty fields count as absent
    (an HTML form sends every input)."""
    for name in fields:
        if name not in BY_NAME:
            raise OptionError(name, f"unknown field; the options are {', '.join(NAMES)}")
    return {name: BY_NAME[name].parse(raw) for name, raw in fields.items() if raw.strip() != ""}


def effective(options: Mapping[str, Value], models: Catalog) -> Options:
    """``options`` with every default that applies filled in."""
    result: Options = {}
    for option in CATALOGUE:
        if option.name in options:
            result[option.name] = options[option.name]
        elif option.kind == "model":
            result[option.name] = models.default
        elif option.default is not None:
            result[option.name] = option.default
    for option in CATALOGUE:
        if option.only_with and option.name not in options:
            other, values = option.only_with
            if result.get(other) not in values:
                result.pop(option.name, None)
    return result


def validate(
    options: Mapping[str, Value], models: Catalog, limits: Limits | None = None
) -> Options:
    """Checks ``options`` (each already parsed) together: the rules between them, the model
    against the deployment's, the stems against the model's, the deployment's limits. Returns
    ``options`` as given (the defaults stay implicit)."""
    full = effective(options, models)
    for rule in RULES:
        if not rule.holds({**full, **options}):
            raise OptionError(rule.field, _rule_words(rule, full))
    model_name = str(full["model"])
    model = models.get(model_name)
    if model is None:
        raise OptionError(
            "model",
            f"{model_name!r} is not one of the models this deployment serves: "
            f"{', '.join(models.names)} (GET /models)",
        )
    wanted: Iterable[str] = ()
    blamed = "stems"
    if "two_stems" in options:
        wanted, blamed = (str(options["two_stems"]),), "two_stems"
    elif "stems" in options:
        wanted = tuple(options["stems"])  # type: ignore[arg-type]
    for stem in wanted:
        if stem not in model.sources:
            having = models.with_stem(stem)
            hint = f"; model {' or '.join(having)} has it" if having else ""
            raise OptionError(
                blamed,
                f"{stem!r} is not one of model {model.name}'s stems "
                f"({', '.join(model.sources)}){hint}",
                later_fields_may_fix="model" not in options and bool(having),
            )
    (limits or Limits()).check(full)
    return dict(options)


def _rule_words(rule: Rule, full: Mapping[str, Value]) -> str:
    option = BY_NAME[rule.field]
    if option.only_with:
        other = option.only_with[0]
        return f"{rule.message} ({other} is {full.get(other)})"
    return rule.message


# Conversions ----------------------------------------------------------------------------------


def to_spec(options: Mapping[str, Value]) -> dict[str, Any]:
    """Options -> the SeparationJob spec's fields (only those given: the CRD's defaults apply)."""
    return {BY_NAME[name].cr: BY_NAME[name].to_cr(value) for name, value in options.items()}


def from_spec(spec: Mapping[str, Any], lenient: bool = False) -> Options:
    """A SeparationJob spec -> its options (the spec's input, output and scheduling fields are
    not options). A value of the wrong type is an OptionError naming the spec's field, or with
    ``lenient`` left to its default (reading what a CR holds, rather than admitting it)."""
    options: Options = {}
    for option in CATALOGUE:
        if option.cr in spec and spec[option.cr] is not None:
            try:
                options[option.name] = option.check(spec[option.cr])
            except OptionError as exc:
                if not lenient:
                    raise OptionError(option.name, f"spec.{option.cr}: {exc.message}") from None
    return options


def separator_args(options: Mapping[str, Value], models: Catalog) -> list[str]:
    """The separator's flags for a job: every option with its effective value."""
    full = effective(options, models)
    return [f"{o.flag}={o.text(full[o.name])}" for o in CATALOGUE if o.name in full]


def stems_of(options: Mapping[str, Value], models: Catalog) -> list[str]:
    """The stems a job's result holds: its stems or two stems, else its model's sources (none
    for a model the deployment does not serve)."""
    model = models.get(str(effective(options, models)["model"]))
    stems = options.get("stems")
    two = options.get("two_stems")
    return output_stems(
        model.sources if model else (),
        tuple(stems) if isinstance(stems, tuple) else None,
        str(two) if two else None,
    )


def to_json(options: Mapping[str, Value]) -> str:
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in options.items()})


# Kept beside the options where a job's options are stored as JSON (local mode's row): the
# URL a job's song is fetched from (``stemkube_contract.urls``). Not an option: no flag, no
# CR field, never in ``effective`` (so never shown).
SOURCE_URL_KEY: Final = "source_url"


def from_json(text: str) -> Options:
    data = json.loads(text)
    options: Options = {k: BY_NAME[k].check(v) for k, v in data.items() if k in BY_NAME}
    if isinstance(data.get(SOURCE_URL_KEY), str):
        options[SOURCE_URL_KEY] = data[SOURCE_URL_KEY]
    return options


# argparse (the separator's parser, the client's flags) ---------------------------------------


def _arg_type(option: Option) -> Callable[[str], Value]:
    def convert(text: str) -> Value:
        try:
            return option.parse(text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    convert.__name__ = option.name  # argparse names it in "invalid <name> value"
    return convert


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    defaults: bool,
    models: Catalog | None = None,
) -> None:
    """Adds every option as ``--flag``: with the catalogue's defaults (the separator), or with
    none so that the server decides (the client)."""
    groups: dict[str, Any] = {}
    for option in CATALOGUE:
        target: Any = parser
        if option.conflicts:
            key = "|".join(sorted((option.name, option.conflicts)))
            if key not in groups:
                groups[key] = parser.add_mutually_exclusive_group()
            target = groups[key]
        default: Value | None = option.default if defaults else None
        if defaults and option.kind == "model" and models is not None:
            default = models.default
        help_text = option.description
        if default is not None:
            help_text += f" Default: {option.text(default)}."
        if option.choices:
            help_text += f" One of {', '.join(map(str, option.choices))}."
        elif option.maximum is not None:
            help_text += f" {option.minimum:g} to {option.maximum:g}."
        target.add_argument(
            option.flag,
            dest=option.name,
            type=_arg_type(option),
            default=default,
            metavar=option.name.upper(),
            help=help_text,
        )


def from_namespace(ns: argparse.Namespace, given_only: bool = False) -> Options:
    """The options argparse found (``given_only``: those not None)."""
    values = {o.name: getattr(ns, o.name, None) for o in CATALOGUE}
    return {k: v for k, v in values.items() if v is not None or not given_only}  # type: ignore[misc]


# The upload form's schema (OpenAPI) -----------------------------------------------------------


def form_schema(models: Catalog) -> dict[str, dict[str, Any]]:
    """Each option as a multipart form field's JSON schema."""
    properties: dict[str, dict[str, Any]] = {}
    for option in CATALOGUE:
        schema: dict[str, Any] = {"description": option.description}
        if option.kind == "stems":
            schema["type"] = "string"
            schema["description"] += " Comma-separated."
        else:
            schema["type"] = option.json_type
        if option.kind == "model":
            schema["enum"] = list(models.names)
            schema["default"] = models.default
        elif option.choices:
            schema["enum"] = list(option.choices)
        if option.kind == "stem":
            schema["enum"] = sorted({s for m in models.models for s in m.sources})
        if option.default is not None:
            schema["default"] = option.to_cr(option.default)
        if option.minimum is not None and not option.choices:
            schema["minimum"] = option.minimum
        if option.maximum is not None and not option.choices:
            schema["maximum"] = option.maximum
        if option.only_with:
            other, values = option.only_with
            schema["description"] += f" Only with {other} {' or '.join(values)}."
        if option.conflicts:
            schema["description"] += f" Not with {option.conflicts}."
        properties[option.name] = schema
    return properties
