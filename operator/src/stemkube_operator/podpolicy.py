"""What a SeparationJob's spec may put on its pod (``stemkube_contract.podpolicy``): its
priority class, labels, annotations and deadlines against this deployment's allow-lists and
maxima. Pure; ``admission.refusal`` asks it first."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stemkube_contract import podpolicy as contract
from stemkube_contract.podpolicy import USER_PREFIX
from stemkube_contract.refusals import FORBIDDEN, INVALID_ARGUMENTS


@dataclass(frozen=True)
class PodPolicy:
    allowed_priority_classes: tuple[str, ...] = ()
    # The deployment's own priority class (STEMKUBE_PRIORITY_CLASS): always allowed.
    default_priority_class: str | None = None
    allowed_labels: tuple[str, ...] = ()
    allowed_annotations: tuple[str, ...] = ()
    max_active_deadline_seconds: int = contract.DEFAULT_MAX_ACTIVE_DEADLINE_SECONDS
    max_ttl_seconds_after_finished: int = contract.DEFAULT_MAX_TTL_SECONDS_AFTER_FINISHED
    # Kueue: the WorkloadPriorityClasses a SeparationJob may name, the deployment's own (always
    # allowed), and its default LocalQueue (a priority applies only to a queued Job).
    allowed_workload_priority_classes: tuple[str, ...] = ()
    default_workload_priority_class: str | None = None
    default_queue: str | None = None

    @property
    def priority_classes(self) -> tuple[str, ...]:
        own = (self.default_priority_class,) if self.default_priority_class else ()
        return tuple(dict.fromkeys((*own, *self.allowed_priority_classes)))

    @property
    def workload_priority_classes(self) -> tuple[str, ...]:
        own = (
            (self.default_workload_priority_class,) if self.default_workload_priority_class else ()
        )
        return tuple(dict.fromkeys((*own, *self.allowed_workload_priority_classes)))


def _words(items: tuple[str, ...]) -> str:
    return ", ".join(repr(i) for i in items)


def _keys_refusal(
    field: str, values: Mapping[str, Any], allowed: tuple[str, ...], chart_value: str
) -> tuple[str, str] | None:
    for key in values:
        # Annotation keys are checked lower-cased by the API server, label keys as they are.
        problem = contract.qualified_name_problem(key.lower() if field == "annotations" else key)
        if problem:
            return INVALID_ARGUMENTS, f"spec.{field} key {key!r}: {problem}"
    for key in values:
        if not contract.key_allowed(key, allowed):
            listed = f" or be one of {_words(allowed)}" if allowed else ""
            return FORBIDDEN, (
                f"spec.{field} key {key!r} is not allowed: the pod's {field} from a "
                f"SeparationJob must start with {USER_PREFIX!r}{listed} (the chart's "
                f"separator.{chart_value})"
            )
    return None


def _workload_priority_refusal(
    spec: Mapping[str, Any], policy: PodPolicy
) -> tuple[str, str] | None:
    """A Kueue priority decides whom Kueue preempts: only the deployment's may be named."""
    priority = spec.get("workloadPriorityClass")
    if not priority:
        return None
    if priority not in policy.workload_priority_classes:
        allowed = policy.workload_priority_classes
        words = f"only {_words(allowed)}" if allowed else "none: their Jobs get the deployment's"
        return FORBIDDEN, (
            f"spec.workloadPriorityClass {priority!r} is not allowed: SeparationJobs here may "
            f"name {words} (the chart's separator.kueue.allowedPriorityClasses)"
        )
    if not (spec.get("queueName") or policy.default_queue):
        return INVALID_ARGUMENTS, (
            "spec.workloadPriorityClass applies only to a Job that Kueue admits: name a Kueue "
            "LocalQueue in spec.queueName (this deployment has no default queue, the chart's "
            "separator.kueue.queueName)"
        )
    return None


def refusal(spec: Mapping[str, Any], policy: PodPolicy) -> tuple[str, str] | None:
    """(reason, message) when ``spec`` asks for more than ``policy`` allows, or for a pod the
    API server would refuse; None when it may run."""
    priority = spec.get("priorityClassName")
    if priority and priority not in policy.priority_classes:
        allowed = policy.priority_classes
        words = f"only {_words(allowed)}" if allowed else "none: their pods get the deployment's"
        return FORBIDDEN, (
            f"spec.priorityClassName {priority!r} is not allowed: SeparationJobs here may name "
            f"{words} (the chart's separator.allowedPriorityClasses)"
        )
    refused = _workload_priority_refusal(spec, policy)
    if refused:
        return refused
    labels = spec.get("labels") or {}
    refused = _keys_refusal("labels", labels, policy.allowed_labels, "allowedPodLabels")
    if refused:
        return refused
    for key, value in labels.items():
        problem = contract.label_value_problem(str(value))
        if problem:
            return INVALID_ARGUMENTS, f"spec.labels[{key!r}] {str(value)[:80]!r}: {problem}"
    annotations = spec.get("annotations") or {}
    refused = _keys_refusal(
        "annotations", annotations, policy.allowed_annotations, "allowedPodAnnotations"
    )
    if refused:
        return refused
    size = contract.annotations_size(annotations)
    if size > contract.MAX_ANNOTATIONS_CHARACTERS:
        return INVALID_ARGUMENTS, (
            f"spec.annotations: {size} characters of keys and values; a SeparationJob's pod "
            f"annotations may have at most {contract.MAX_ANNOTATIONS_CHARACTERS}"
        )
    for field, top, chart_value in (
        ("activeDeadlineSeconds", policy.max_active_deadline_seconds, "maxActiveDeadlineSeconds"),
        (
            "ttlSecondsAfterFinished",
            policy.max_ttl_seconds_after_finished,
            "maxTtlSecondsAfterFinished",
        ),
    ):
        value = spec.get(field)
        if isinstance(value, int) and value > top:
            return INVALID_ARGUMENTS, (
                f"spec.{field} {value} is more than this deployment allows ({top}, the chart's "
                f"separator.{chart_value})"
            )
    return None
