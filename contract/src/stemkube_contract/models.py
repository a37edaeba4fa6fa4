"""The models a deployment serves: their names, the stems each gives, and where its weights come
from. Configuration, not code: the chart's ``models`` value and local mode's ``--models`` give
a declaration in JSON; without one, the pretrained Demucs models are served."""

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
STEM_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_STEM_NAME = re.compile(STEM_NAME_PATTERN)
MODELS_ENV = "STEMKUBE_MODELS"  # a declaration, in JSON
DEFAULT_MODEL_ENV = "STEMKUBE_MODEL"  # the default model, by name

MAX_STEMS = 32  # sources of a model, stems of a request (the CRD's maxItems)

FOUR_STEMS = ("vocals", "drums", "bass", "other")
SIX_STEMS = (*FOUR_STEMS, "guitar", "piano")


class ModelsError(ValueError):
    """A declaration of models that cannot be served."""


@dataclass(frozen=True)
class Model:
    name: str
    sources: tuple[str, ...]  # the stems it gives, in the order results list them
    # Folder of weights in Demucs's local-repo format; None: the deployment's folder (or the
    # Demucs hub when it has none).
    repo: str | None = None
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "sources": list(self.sources)}
        if self.repo:
            data["repo"] = self.repo
        if self.description:
            data["description"] = self.description
        return data


def _pretrained(name: str, sources: tuple[str, ...], description: str) -> Model:
    return Model(name, sources, None, description)


PRETRAINED = (
    _pretrained("htdemucs", FOUR_STEMS, "Hybrid Transformer Demucs (the default)"),
    _pretrained("htdemucs_ft", FOUR_STEMS, "htdemucs fine-tuned per stem: better, 4x slower"),
    _pretrained("htdemucs_6s", SIX_STEMS, "htdemucs with guitar and piano stems"),
    _pretrained("hdemucs_mmi", FOUR_STEMS, "Hybrid Demucs v3, trained on more data"),
    _pretrained("mdx", FOUR_STEMS, "Demucs v3 of the MDX challenge"),
    _pretrained("mdx_extra", FOUR_STEMS, "mdx trained on extra data"),
    _pretrained("mdx_q", FOUR_STEMS, "mdx, quantized weights"),
    _pretrained("mdx_extra_q", FOUR_STEMS, "mdx_extra, quantized weights"),
)
DEFAULT_MODEL = "htdemucs"


def model_name_problem(name: str) -> str | None:
    if not _MODEL_NAME.fullmatch(name):
        return (
            f"{name!r} is not a model name (letters, digits, '_', '.', '-'; at most 63, "
            "starting with a letter or digit)"
        )
    return None


def stem_name_problem(name: str) -> str | None:
    if not _STEM_NAME.fullmatch(name):
        return f"{name!r} is not a stem name (lower-case letters, digits and '_', at most 32)"
    return None


@dataclass(frozen=True)
class Catalog:
    """The models one deployment serves; ``default`` is used when a job names none."""

    models: tuple[Model, ...] = PRETRAINED
    default: str = DEFAULT_MODEL
    _by_name: dict[str, Model] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.models:
            raise ModelsError("declare at least one model")
        by_name: dict[str, Model] = {}
        for model in self.models:
            problem = model_name_problem(model.name)
            if problem:
                raise ModelsError(problem)
            if model.name in by_name:
                raise ModelsError(f"model {model.name!r} is declared twice")
            if not 0 < len(model.sources) <= MAX_STEMS:
                raise ModelsError(
                    f"model {model.name!r}: declare its sources (stems), 1 to {MAX_STEMS}"
                )
            for stem in model.sources:
                stem_problem = stem_name_problem(stem)
                if stem_problem:
                    raise ModelsError(f"model {model.name!r}: {stem_problem}")
            if len(set(model.sources)) != len(model.sources):
                raise ModelsError(f"model {model.name!r}: a source is named twice")
            by_name[model.name] = model
        if self.default not in by_name:
            raise ModelsError(
                f"the default model {self.default!r} is not declared "
                f"(declared: {', '.join(by_name)})"
            )
        object.__setattr__(self, "_by_name", by_name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def get(self, name: str) -> Model | None:
        return self._by_name.get(name)

    def with_stem(self, stem: str) -> list[str]:
        return [m.name for m in self.models if stem in m.sources]

    def with_default(self, name: str) -> "Catalog":
        return Catalog(self.models, name)

    def plus(self, extra: Iterable[Model]) -> "Catalog":
        """This catalogue with ``extra`` models added (a declared name wins)."""
        added = tuple(m for m in extra if m.name not in self._by_name)
        return Catalog(self.models + added, self.default)

    def to_json(self) -> dict[str, Any]:
        return {"default": self.default, "models": [m.to_json() for m in self.models]}


def _model(item: Any, where: str) -> Model:
    if not isinstance(item, dict):
        raise ModelsError(f"{where}: each model is an object with name and sources")
    unknown = set(item) - {"name", "sources", "repo", "description"}
    if unknown:
        raise ModelsError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name, sources = item.get("name"), item.get("sources")
    if not isinstance(name, str):
        raise ModelsError(f"{where}: name must be a string")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ModelsError(f"{where} ({name}): sources must be a list of stem names")
    repo, description = item.get("repo"), item.get("description", "")
    if repo is not None and not isinstance(repo, str):
        raise ModelsError(f"{where} ({name}): repo must be a folder path")
    if not isinstance(description, str):
        raise ModelsError(f"{where} ({name}): description must be a string")
    return Model(name, tuple(sources), repo or None, description)


def parse_catalog(text: str) -> Catalog:
    """A declaration: ``{"default": NAME, "models": [{"name", "sources", "repo"?,
    "description"?}, ...]}``, or just the list (the first is the default)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelsError(f"not JSON: {exc}") from None
    if isinstance(data, list):
        data = {"models": data}
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ModelsError('expected {"default": NAME, "models": [...]} or a list of models')
    unknown = set(data) - {"default", "models"}
    if unknown:
        raise ModelsError(f"unknown field(s) {', '.join(sorted(unknown))}")
    models = tuple(_model(item, f"models[{i}]") for i, item in enumerate(data["models"]))
    default = data.get("default") or (models[0].name if models else DEFAULT_MODEL)
    if not isinstance(default, str):
        raise ModelsError("default must be a model name")
    return Catalog(models, default)


def output_stems(
    sources: Sequence[str], stems: Sequence[str] | None, two_stems: str | None
) -> list[str]:
    """The stems a result holds, as the separator names its ZIP's members."""
    if two_stems:
        return [two_stems, f"no_{two_stems}"]
    if stems:
        return list(stems)
    return list(sources)


def catalog_from_env(env: Mapping[str, str]) -> Catalog:
    """The deployment's models as the chart gives them to the API and the operator:
    ``STEMKUBE_MODELS`` (else the pretrained models), ``STEMKUBE_MODEL`` the default."""
    catalog = parse_catalog(env[MODELS_ENV]) if env.get(MODELS_ENV) else Catalog()
    default = env.get(DEFAULT_MODEL_ENV)
    if default and default != catalog.default:
        if catalog.get(default) is None:
            raise ModelsError(
                f"{DEFAULT_MODEL_ENV}: {default!r} is not one of the models served: "
                f"{', '.join(catalog.names)}"
            )
        catalog = catalog.with_default(default)
    return catalog
