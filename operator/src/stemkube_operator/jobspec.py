"""SeparationJob -> batch/v1 Job manifest. Pure: plain dicts in, a plain dict out."""

from typing import Any

from stemkube_contract import batch, exitcodes, joblink, kueue, limits, urls
from stemkube_contract import options as catalogue
from stemkube_contract.models import SIX_STEMS
from stemkube_operator.config import OperatorConfig
from stemkube_operator.resource import (
    API_VERSION,
    CONTAINER,
    KIND,
    MANAGED_BY,
    NAME_ANNOTATION,
    NAME_LABEL,
    UID_LABEL,
    job_name,
)

RUN_AS = 10001  # the separator image's non-root user
MODEL_MOUNT = "/models"  # where the model weights cache volume is mounted
LINK_TOKEN_VOLUME = "link-token"


def _shared_args(spec: dict[str, Any], config: OperatorConfig) -> list[str]:
    """Every option (the contract's flags, defaults filled in) and the deployment's precision:
    what the members of a batch share."""
    return [
        *catalogue.separator_args(catalogue.from_spec(spec), config.models),
        f"--precision={config.precision}",
    ]


def _repo_args(spec: dict[str, Any], config: OperatorConfig) -> list[str]:
    options = catalogue.from_spec(spec)
    model = config.models.get(str(options.get("model", config.models.default)))
    repo = (model.repo if model else None) or config.model_repo
    return [f"--model-repo={repo}"] if repo else []


def _url(ref: dict[str, Any]) -> str:
    return f"s3://{ref['bucket']}/{ref['key']}"


def source_url(spec: dict[str, Any]) -> str | None:
    """The URL a SeparationJob's song is fetched from (``spec.input.url``); None for an object."""
    url = (spec.get("input") or {}).get("url")
    return str(url) if url else None


def _input(spec: dict[str, Any]) -> str:
    """INPUT: the object, or for a URL ``env:STEMKUBE_INPUT_URL``: the URL itself goes in the
    pod's environment (``_env``), never in its arguments."""
    return urls.INPUT_FROM_ENV if source_url(spec) else _url(spec["input"])


def separator_args(cr: dict[str, Any], config: OperatorConfig) -> list[str]:
    """The separator's command line (after its entrypoint) for this SeparationJob: the objects,
    every option, progress and where the weights are."""
    spec = cr["spec"]
    meta = cr["metadata"]
    return [
        _input(spec),
        _url(spec["output"]),
        *_shared_args(spec, config),
        f"--progress-cr={meta['namespace']}/{meta['name']}",
        f"--job-id={meta['name']}",
        *_repo_args(spec, config),
    ]


def batch_args(members: list[dict[str, Any]], config: OperatorConfig) -> list[str]:
    """The command line of a batch: the options once (the members' specs differ only in their
    objects), then one ``--item`` per member, in order."""
    spec = members[0]["spec"]
    items = [
        arg
        for cr in members
        for arg in batch.item_args(
            _url(cr["spec"]["input"]),
            _url(cr["spec"]["output"]),
            cr["metadata"]["namespace"],
            cr["metadata"]["name"],
        )
    ]
    return [*_shared_args(spec, config), *_repo_args(spec, config), *items]


def _env(config: OperatorConfig, spec: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    # No storage credential and no storage endpoint: the pod reaches its objects only through
    # the URLs the job link presigns for its own SeparationJobs.
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        # Caches and temporary files go to the writable emptyDir: the root filesystem is read-only.
        {"name": "HOME", "value": "/tmp"},
        # The separator refuses a larger input before downloading it (the API's limit too).
        {"name": limits.MAX_FILE_SIZE_ENV, "value": str(config.max_file_size)},
        {"name": joblink.URL_ENV, "value": config.link_url},
        {"name": joblink.TOKEN_ENV, "value": joblink.token_path()},
    ]
    url = source_url(spec or {})
    if url:
        # The address rules of the fetch (the cluster's ranges refused; a test's allow-list).
        env.extend({"name": k, "value": v} for k, v in config.url_policy.env().items())
        env.append({"name": urls.INPUT_URL_ENV, "value": url})
    return env


def _resources(config: OperatorConfig) -> dict[str, Any]:
    requests = {"cpu": config.cpu_request, "memory": config.memory_request}
    limits: dict[str, str] = {}
    if config.memory_limit:
        limits["memory"] = config.memory_limit
    if config.cpu_limit:
        limits["cpu"] = config.cpu_limit
    if config.gpu_count > 0:
        # Extended resources are set in limits (requests default to them and may not differ).
        limits[config.gpu_resource] = str(config.gpu_count)
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return resources


def scratch_size(spec: dict[str, Any], config: OperatorConfig, songs: int = 1) -> str:
    """The scratch emptyDir's sizeLimit: what a separation of the largest, longest input can
    write there (the download, then the stems of its options' format; ``songs`` of them at
    once in a batch), plus room for caches; see the README. Past it the kubelet evicts the pod
    instead of letting it fill the node's disk."""
    options = catalogue.effective(catalogue.from_spec(spec), config.models)
    # A model the catalogue does not list (a folder's own): as many stems as the largest known.
    stems = len(catalogue.stems_of(options, config.models)) or len(SIX_STEMS)
    rate = limits.stem_bytes_per_second(
        str(options.get("format", "mp3")),
        str(options.get("wav_depth", "16")),
        int(str(options.get("bitrate", 320))),
    )
    total = limits.scratch_bytes(config.max_file_size, stems, rate, songs=songs)
    return f"{-(-total // 2**20)}Mi"


def _volumes(
    spec: dict[str, Any], config: OperatorConfig, songs: int = 1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": config.shm_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": scratch_size(spec, config, songs)}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    # The pod's one credential: a token bound to it, for the job link's audience only (the
    # API server refuses it), which the kubelet renews in the file before it expires.
    volumes.append(
        {
            "name": LINK_TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": joblink.AUDIENCE,
                            "expirationSeconds": joblink.TOKEN_SECONDS,
                            "path": joblink.TOKEN_FILE,
                        }
                    }
                ]
            },
        }
    )
    mounts.append({"name": LINK_TOKEN_VOLUME, "mountPath": joblink.TOKEN_DIR, "readOnly": True})
    if config.model_cache_claim:
        volumes.append(
            {"name": "models", "persistentVolumeClaim": {"claimName": config.model_cache_claim}}
        )
        mounts.append({"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True})
    return volumes, mounts


def labels_for(cr: dict[str, Any]) -> dict[str, str]:
    meta = cr["metadata"]
    return {
        "app.kubernetes.io/name": "stemkube",
        "app.kubernetes.io/component": "separator",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        NAME_LABEL: job_name(meta["name"]),
        UID_LABEL: meta["uid"],
    }


def build_job(cr: dict[str, Any], config: OperatorConfig) -> dict[str, Any]:
    """The one Job that runs this SeparationJob's separation."""
    meta, spec = cr["metadata"], cr["spec"]
    labels = labels_for(cr)
    volumes, mounts = _volumes(spec, config)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": config.separator_image,
        "imagePullPolicy": config.image_pull_policy,
        "args": separator_args(cr, config),
        "env": _env(config, spec),
        "resources": _resources(config),
        "volumeMounts": mounts,
        # A crash without a message still tells its last lines.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # podFailurePolicy requires it
        # The account names the pod to the job link (its token's subject); the pod gets no
        # token of the API server's: it has no Kubernetes permission to use.
        "serviceAccountName": config.service_account,
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": volumes,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if config.node_selector:
        pod_spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in config.tolerations]
    if config.runtime_class:
        pod_spec["runtimeClassName"] = config.runtime_class
    priority_class = spec.get("priorityClassName") or config.priority_class
    if priority_class:
        pod_spec["priorityClassName"] = priority_class
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in config.image_pull_secrets]

    pod_labels = {**spec.get("labels", {}), **labels}  # ours win: they link the pod to its job
    job_labels = dict(labels)
    job_spec: dict[str, Any] = {
        "backoffLimit": config.backoff_limit,
        "activeDeadlineSeconds": spec.get("activeDeadlineSeconds", config.active_deadline_seconds),
        "ttlSecondsAfterFinished": spec.get(
            "ttlSecondsAfterFinished", config.ttl_seconds_after_finished
        ),
        "podFailurePolicy": {
            "rules": [
                # Bad input or a bad command line: another attempt gives the same answer.
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": list(exitcodes.FINAL_CODES),
                    },
                },
                # Preemption, node drain, eviction: not the separation's fault.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                # Nor a pod deleted under it, which it leaves with this code: Kueue preempts
                # by suspending the Job, whose controller deletes the pod with no condition.
                # Counted, a few preemptions would use up the retries and fail the separation.
                {
                    "action": "Ignore",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [exitcodes.TERMINATED],
                    },
                },
            ]
        },
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {**spec.get("annotations", {}), NAME_ANNOTATION: meta["name"]},
            },
            "spec": pod_spec,
        },
    }
    queue = spec.get("queueName") or config.kueue_queue
    if queue:
        job_labels[kueue.QUEUE_LABEL] = queue
        priority = spec.get("workloadPriorityClass") or config.kueue_priority_class
        if priority:
            job_labels[kueue.PRIORITY_CLASS_LABEL] = priority
        job_spec["suspend"] = True  # Kueue admits it by unsuspending
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": job_labels,
            "annotations": {NAME_ANNOTATION: meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job_spec,
    }


def build_batch_job(members: list[dict[str, Any]], config: OperatorConfig) -> dict[str, Any]:
    """One Job for several SeparationJobs of one batch key (``members[0]`` leads: the Job has
    its name and labels). Every member owns it, so it goes when the last of them does; no
    member controls it. The deadline is the members' one each, added up."""
    if len(members) == 1:
        return build_job(members[0], config)
    leader = members[0]
    job = build_job(leader, config)
    listed = batch.encode_members(
        [batch.Member(cr["metadata"]["name"], cr["metadata"]["uid"]) for cr in members]
    )
    job["metadata"]["annotations"][batch.MEMBERS_ANNOTATION] = listed
    template = job["spec"]["template"]
    template["metadata"]["annotations"][batch.MEMBERS_ANNOTATION] = listed
    template["spec"]["containers"][0]["args"] = batch_args(members, config)
    # The next member's download and the previous member's stems beside the current one's.
    template["spec"]["volumes"], _ = _volumes(leader["spec"], config, songs=2)
    job["spec"]["activeDeadlineSeconds"] *= len(members)
    job["metadata"]["ownerReferences"] = [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": cr["metadata"]["name"],
            "uid": cr["metadata"]["uid"],
            "controller": False,
            "blockOwnerDeletion": False,
        }
        for cr in members
    ]
    return job
