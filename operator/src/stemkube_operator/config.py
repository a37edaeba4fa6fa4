"""The operator's configuration, read once from the environment (the Helm chart sets it)."""

import json
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from stemkube_contract import joblink, kueue, podpolicy, webhooks
from stemkube_contract.addresses import AddressPolicy
from stemkube_contract.batch import DEFAULT_MAX_PER_JOB, MAX_PER_JOB_ENV, parse_max_per_job
from stemkube_contract.limits import max_file_size_from_env
from stemkube_contract.models import Catalog, ModelsError, catalog_from_env
from stemkube_contract.options import (
    DEFAULT_PRECISION,
    LIMITS_ENV,
    PRECISION_ENV,
    PRECISIONS,
    Limits,
    parse_limits,
)
from stemkube_contract.scopes import DEFAULT_BUCKET, Scopes, default_scopes, scopes_from_env
from stemkube_operator.podpolicy import PodPolicy


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class OperatorConfig:
    separator_image: str = "stemkube/separator:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    service_account: str = "stemkube-separator"
    gpu_resource: str = "nvidia.com/gpu"
    gpu_count: int = 1
    cpu_request: str = "2"
    # None: no CPU limit. With one, the separator sizes its threads to it (several pods per GPU).
    cpu_limit: str | None = None
    memory_request: str = "8Gi"
    memory_limit: str | None = None
    shm_size: str = "2Gi"
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    runtime_class: str | None = None
    priority_class: str | None = None
    # Kueue: the LocalQueue and WorkloadPriorityClass of a SeparationJob that names none.
    kueue_queue: str | None = None
    kueue_priority_class: str | None = None
    # The operator's own storage endpoint (AWS_*). Separator pods get neither it nor any
    # credential: they reach storage through presigned URLs of the job link.
    s3_endpoint: str | None = None
    s3_region: str | None = None
    # A PersistentVolumeClaim of model weights, mounted read-only at /models.
    model_cache_claim: str | None = None
    # Where the separator finds models in Demucs's local-repo format (--model-repo): a path in
    # the image (weights baked in) or /models with the cache claim. None: the Demucs hub/cache.
    model_repo: str | None = None
    # The models this deployment serves, and its limits on the costly options.
    models: Catalog = field(default_factory=Catalog)
    limits: Limits = field(default_factory=Limits)
    precision: str = DEFAULT_PRECISION  # the separator's --precision, for every Job
    # The largest input, bytes: the API's MAX_FILE_SIZE (the chart sets both from one value),
    # passed to every separator, which refuses a larger object before downloading it.
    max_file_size: int = max_file_size_from_env({})
    backoff_limit: int = 3
    active_deadline_seconds: int = 3600
    ttl_seconds_after_finished: int = 86400
    # A finished Job (and its pods) is deleted as soon as its SeparationJobs have recorded their
    # outcome ("none" kept): the SeparationJob is the record. "failed" keeps a failed one until
    # its TTL (its pods' logs, for debugging); "all" keeps every one until then.
    keep_finished_jobs: str = "none"
    max_running: int = 0  # 0: no limit
    # Up to this many waiting SeparationJobs of one batch key share a Job (1: never).
    batch_max_per_job: int = DEFAULT_MAX_PER_JOB
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    expiry_interval_seconds: float = 30.0  # how often finished jobs are checked for their TTL
    # URL jobs: the addresses their separators may not fetch from beyond the fixed rules (the
    # cluster's Service and Pod ranges: STEMKUBE_URL_DENY_CIDRS, the chart's
    # urlImport.clusterCIDRs) and, for tests only, those allowed whatever the rules say
    # (STEMKUBE_URL_ALLOW_CIDRS): both passed to every separator (``jobspec``).
    url_policy: AddressPolicy = field(default_factory=AddressPolicy)
    # Webhooks (``webhooks``): the deployment's signing secret (STEMKUBE_WEBHOOK_SECRET, from
    # the chart's Secret; never shown), the retry schedule, and the API's public address for
    # the payload's links (STEMKUBE_PUBLIC_URL; none: paths). Their addresses are checked
    # with ``url_policy``.
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_backoff: webhooks.Backoff = field(default_factory=webhooks.Backoff)
    public_url: str | None = None
    # What a SeparationJob's spec may put on its pod (``podpolicy``): allow-lists and maxima.
    pod_policy: PodPolicy = field(default_factory=PodPolicy)
    # Which objects each namespace's SeparationJobs may name (STEMKUBE_STORAGE_SCOPES, the
    # chart's storageScopes): the admission check's and the cleanup's bound.
    scopes: Scopes = field(default_factory=lambda: default_scopes(DEFAULT_BUCKET))
    # The job link (``link``): the port this process serves it on, and its base URL as the
    # separator pods reach it (``joblink.URL_ENV`` in their environment). The URL is either
    # given (joblink.URL_ENV) or found at start-up from a Service (``link_service``,
    # STEMKUBE_LINK_SERVICE; ``resolve_link_url``); "" until then.
    link_port: int = joblink.DEFAULT_PORT
    link_url: str = ""
    link_service: tuple[str, str] | None = None  # (namespace, name)


LINK_PORT_ENV = "STEMKUBE_LINK_PORT"
LINK_SERVICE_ENV = "STEMKUBE_LINK_SERVICE"
LINK_PORT_NAME = "link"  # the Service port the link URL prefers


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


KEEP_FINISHED_JOBS = ("none", "failed", "all")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _json(env: Mapping[str, str], name: str, kind: type) -> Any:
    raw = env.get(name)
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} must be JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{name} must be a JSON {kind.__name__}")
    return value


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _models(env: Mapping[str, str]) -> Catalog:
    try:
        return catalog_from_env(env)
    except ModelsError as exc:
        raise ConfigError(f"models: {exc}") from None


def _limits(env: Mapping[str, str]) -> Limits:
    try:
        return parse_limits(env.get(LIMITS_ENV, ""))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _precision(env: Mapping[str, str]) -> str:
    value = env.get(PRECISION_ENV) or DEFAULT_PRECISION
    if value not in PRECISIONS:
        raise ConfigError(f"{PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, not {value!r}")
    return value


def _max_file_size(env: Mapping[str, str]) -> int:
    try:
        return max_file_size_from_env(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _url_policy(env: Mapping[str, str]) -> AddressPolicy:
    try:
        return AddressPolicy.from_env(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _webhook_backoff(env: Mapping[str, str]) -> webhooks.Backoff:
    try:
        return webhooks.Backoff.from_env(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _scopes(env: Mapping[str, str]) -> Scopes:
    try:
        return scopes_from_env(env, env.get("STEMKUBE_BUCKET") or DEFAULT_BUCKET)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _batch_max(env: Mapping[str, str]) -> int:
    try:
        return parse_max_per_job(env.get(MAX_PER_JOB_ENV))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _allow_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Label or annotation keys, each exact or a prefix ending in '/'."""
    entries = _list(env, name)
    for entry in entries:
        problem = podpolicy.allow_list_problem(entry)
        if problem:
            raise ConfigError(f"{name}: {entry!r} is {problem} (or a prefix of one ending in '/')")
    return entries


def _pod_policy(env: Mapping[str, str], deadline: int, ttl: int) -> PodPolicy:
    """The allow-lists and maxima; the deployment's own defaults must be within its maxima
    (else every SeparationJob naming none would run past what one naming it may ask)."""
    defaults = PodPolicy()
    policy = PodPolicy(
        allowed_priority_classes=_list(env, podpolicy.ALLOWED_PRIORITY_CLASSES_ENV),
        default_priority_class=env.get("STEMKUBE_PRIORITY_CLASS") or None,
        allowed_labels=_allow_list(env, podpolicy.ALLOWED_POD_LABELS_ENV),
        allowed_annotations=_allow_list(env, podpolicy.ALLOWED_POD_ANNOTATIONS_ENV),
        allowed_workload_priority_classes=_list(env, kueue.ALLOWED_PRIORITY_CLASSES_ENV),
        default_workload_priority_class=env.get(kueue.PRIORITY_CLASS_ENV) or None,
        default_queue=env.get(kueue.QUEUE_ENV) or None,
        max_active_deadline_seconds=_int(
            env,
            podpolicy.MAX_ACTIVE_DEADLINE_SECONDS_ENV,
            defaults.max_active_deadline_seconds,
            minimum=1,
        ),
        max_ttl_seconds_after_finished=_int(
            env,
            podpolicy.MAX_TTL_SECONDS_AFTER_FINISHED_ENV,
            defaults.max_ttl_seconds_after_finished,
        ),
    )
    for default_name, value, max_name, top in (
        (
            "STEMKUBE_ACTIVE_DEADLINE_SECONDS",
            deadline,
            podpolicy.MAX_ACTIVE_DEADLINE_SECONDS_ENV,
            policy.max_active_deadline_seconds,
        ),
        (
            "STEMKUBE_TTL_SECONDS_AFTER_FINISHED",
            ttl,
            podpolicy.MAX_TTL_SECONDS_AFTER_FINISHED_ENV,
            policy.max_ttl_seconds_after_finished,
        ),
    ):
        if value > top:
            raise ConfigError(f"{default_name} ({value}) is above {max_name} ({top})")
    return policy


def _link_url(env: Mapping[str, str]) -> str:
    url = env.get(joblink.URL_ENV) or ""
    if url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{joblink.URL_ENV} must be an http(s) URL, not {url!r}")
    return url.rstrip("/")


def _link_service(env: Mapping[str, str]) -> tuple[str, str] | None:
    raw = (env.get(LINK_SERVICE_ENV) or "").strip()
    if not raw:
        return None
    namespace, _, name = raw.rpartition("/")
    if not name or "/" in namespace:
        raise ConfigError(f"{LINK_SERVICE_ENV} must be NAME or NAMESPACE/NAME, not {raw!r}")
    return (namespace or env.get("POD_NAMESPACE") or "default", name)


def service_url(service: Mapping[str, Any]) -> str:
    """The link's base URL from its Service (a dict as the API gives it): its cluster IP and
    the port named ``link`` (else the first). An IP, not the Service's DNS name: a pod's DNS
    policy may not resolve cluster names, and the address never changes while it exists."""
    meta = service.get("metadata") or {}
    shown = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    spec = service.get("spec") or {}
    ip = spec.get("clusterIP")
    ports = spec.get("ports") or []
    if not ip or ip == "None":
        raise ConfigError(f"the link Service {shown} has no cluster IP (headless?)")
    if not ports:
        raise ConfigError(f"the link Service {shown} has no port")
    port = next((p for p in ports if p.get("name") == LINK_PORT_NAME), ports[0])["port"]
    host = f"[{ip}]" if ":" in ip else ip  # IPv6
    return f"http://{host}:{port}"


def resolve_link_url(
    config: OperatorConfig, read_service: Callable[[str, str], Mapping[str, Any] | None]
) -> OperatorConfig:
    """The configuration with its link URL: the given one, else its Service's
    (``read_service(namespace, name)``, None when there is none). ConfigError when neither is
    set: without the link no separator could read its input or report anything."""
    if config.link_url:
        return config
    if config.link_service is None:
        raise ConfigError(
            f"the job link's address is not set: set {joblink.URL_ENV} (a URL) or "
            f"{LINK_SERVICE_ENV} (the operator's link Service, NAME or NAMESPACE/NAME)"
        )
    namespace, name = config.link_service
    service = read_service(namespace, name)
    if service is None:
        raise ConfigError(f"{LINK_SERVICE_ENV}: there is no Service {namespace}/{name}")
    return replace(config, link_url=service_url(service))


def load_config(env: Mapping[str, str] | None = None) -> OperatorConfig:
    env = os.environ if env is None else env
    defaults = OperatorConfig()
    tolerations = _json(env, "STEMKUBE_TOLERATIONS", list)
    deadline = _int(
        env, "STEMKUBE_ACTIVE_DEADLINE_SECONDS", defaults.active_deadline_seconds, minimum=1
    )
    ttl = _int(env, "STEMKUBE_TTL_SECONDS_AFTER_FINISHED", defaults.ttl_seconds_after_finished)
    return OperatorConfig(
        scopes=_scopes(env),
        separator_image=env.get("STEMKUBE_SEPARATOR_IMAGE", defaults.separator_image),
        image_pull_policy=env.get("STEMKUBE_IMAGE_PULL_POLICY", defaults.image_pull_policy),
        image_pull_secrets=_list(env, "STEMKUBE_IMAGE_PULL_SECRETS"),
        service_account=env.get("STEMKUBE_SEPARATOR_SERVICE_ACCOUNT", defaults.service_account),
        gpu_resource=env.get("STEMKUBE_GPU_RESOURCE", defaults.gpu_resource),
        gpu_count=_int(env, "STEMKUBE_GPU_COUNT", defaults.gpu_count),
        cpu_request=env.get("STEMKUBE_CPU_REQUEST", defaults.cpu_request),
        cpu_limit=env.get("STEMKUBE_CPU_LIMIT") or None,
        memory_request=env.get("STEMKUBE_MEMORY_REQUEST", defaults.memory_request),
        memory_limit=env.get("STEMKUBE_MEMORY_LIMIT") or None,
        shm_size=env.get("STEMKUBE_SHM_SIZE", defaults.shm_size),
        node_selector=_json(env, "STEMKUBE_NODE_SELECTOR", dict),
        tolerations=tuple(tolerations),
        runtime_class=env.get("STEMKUBE_RUNTIME_CLASS") or None,
        priority_class=env.get("STEMKUBE_PRIORITY_CLASS") or None,
        kueue_queue=env.get(kueue.QUEUE_ENV) or None,
        kueue_priority_class=env.get(kueue.PRIORITY_CLASS_ENV) or None,
        s3_endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
        s3_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        model_cache_claim=env.get("STEMKUBE_MODEL_CACHE_CLAIM") or None,
        model_repo=env.get("STEMKUBE_MODEL_REPO")
        or ("/models" if env.get("STEMKUBE_MODEL_CACHE_CLAIM") else None),
        models=_models(env),
        limits=_limits(env),
        precision=_precision(env),
        max_file_size=_max_file_size(env),
        backoff_limit=_int(env, "STEMKUBE_BACKOFF_LIMIT", defaults.backoff_limit),
        active_deadline_seconds=deadline,
        ttl_seconds_after_finished=ttl,
        keep_finished_jobs=_choice(
            env, "STEMKUBE_KEEP_FINISHED_JOBS", KEEP_FINISHED_JOBS, defaults.keep_finished_jobs
        ),
        max_running=_int(env, "STEMKUBE_MAX_RUNNING", defaults.max_running),
        batch_max_per_job=_batch_max(env),
        namespaces=_list(env, "STEMKUBE_NAMESPACES"),
        expiry_interval_seconds=float(
            _int(env, "STEMKUBE_EXPIRY_INTERVAL_SECONDS", int(defaults.expiry_interval_seconds), 1)
        ),
        url_policy=_url_policy(env),
        webhook_secret=env.get(webhooks.SECRET_ENV) or None,
        webhook_backoff=_webhook_backoff(env),
        public_url=env.get("STEMKUBE_PUBLIC_URL") or None,
        pod_policy=_pod_policy(env, deadline, ttl),
        link_port=_int(env, LINK_PORT_ENV, defaults.link_port, minimum=1),
        link_url=_link_url(env),
        link_service=_link_service(env),
    )
