"""``stemkube-api``: the REST API's process (uvicorn), in Kubernetes mode or local mode."""

import argparse
import datetime
import importlib.util
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from stemkube_api.options import DEFAULT_MODEL, MODELS

if TYPE_CHECKING:
    from stemkube_api.local.settings import LocalSettings

LOCAL_FLAGS = ("data_dir", "workers", "model", "model_repo", "ttl")


class CliError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemkube-api",
        description=(
            "The stemkube REST API. With --local it runs separations on this machine (no "
            "cluster, files on local disk). Without it, Kubernetes mode reads its settings from "
            "the environment: STEMKUBE_NAMESPACE, STEMKUBE_BUCKET, MAX_FILE_SIZE, "
            "STEMKUBE_PRESIGNED_DOWNLOADS, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_CA_BUNDLE, KUBECONFIG (else in-cluster)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    local = parser.add_argument_group("local mode")
    local.add_argument(
        "--local", action="store_true", help="run separations on this machine (no cluster)"
    )
    local.add_argument(
        "--data-dir",
        type=Path,
        help="jobs, uploads and results (env STEMKUBE_DATA_DIR; default ~/.local/share/stemkube)",
    )
    local.add_argument(
        "--workers",
        type=int,
        help="separations at once (env STEMKUBE_WORKERS; default one per GPU, 1 without)",
    )
    local.add_argument(
        "--model",
        choices=MODELS,
        help=f"model of uploads that name none (env STEMKUBE_MODEL; default {DEFAULT_MODEL})",
    )
    local.add_argument(
        "--model-repo",
        type=Path,
        help="folder of Demucs models in its local-repo format, for machines that cannot "
        "download pretrained weights (env STEMKUBE_MODEL_REPO; default: the Demucs hub/cache)",
    )
    local.add_argument(
        "--ttl",
        type=float,
        help="seconds a finished job and its files are kept "
        "(env STEMKUBE_TTL_SECONDS_AFTER_FINISHED; default 86400)",
    )
    return parser


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise CliError(f"{name} must be a whole number, not {raw!r}") from None


def local_settings(args: argparse.Namespace, env: Mapping[str, str]) -> "LocalSettings":
    from stemkube_api.local.settings import (
        DEFAULT_TTL_SECONDS,
        LocalSettings,
        default_data_dir,
        expiry_interval,
        gpu_ids,
    )

    if importlib.util.find_spec("stemkube_separator") is None:
        raise CliError(
            "local mode runs separations with the stemkube-separator package, which is not "
            "installed: pip install ./separator-image (make run does it for you)"
        )
    gpus = tuple(gpu_ids(env))
    workers = args.workers if args.workers is not None else _env_int(env, "STEMKUBE_WORKERS")
    workers = workers if workers is not None else max(1, len(gpus))
    if workers < 1:
        raise CliError(f"--workers must be at least 1, not {workers}")
    model = args.model or env.get("STEMKUBE_MODEL") or DEFAULT_MODEL
    if model not in MODELS:
        raise CliError(f"STEMKUBE_MODEL: {model!r} is not one of {', '.join(MODELS)}")
    repo_text = args.model_repo or env.get("STEMKUBE_MODEL_REPO") or None
    repo = Path(repo_text).resolve() if repo_text else None
    if repo is not None and not repo.is_dir():
        raise CliError(f"--model-repo {repo}: no such folder")
    ttl_seconds = args.ttl
    if ttl_seconds is None:
        ttl_seconds = _env_int(env, "STEMKUBE_TTL_SECONDS_AFTER_FINISHED") or DEFAULT_TTL_SECONDS
    if ttl_seconds <= 0:
        raise CliError(f"--ttl must be positive, not {ttl_seconds}")
    ttl = datetime.timedelta(seconds=ttl_seconds)
    data_dir = (args.data_dir or default_data_dir(env)).resolve()
    return LocalSettings(
        data_dir=data_dir,
        workers=workers,
        model=model,
        model_repo=repo,
        ttl=ttl,
        expiry_interval=expiry_interval(env, ttl),
        gpus=gpus,
    )


def local_app(args: argparse.Namespace, env: Mapping[str, str]) -> FastAPI:
    from stemkube_api.app import create_app
    from stemkube_api.local.backend import LocalBackend
    from stemkube_api.local.records import SchemaError
    from stemkube_api.local.store import LocalStore
    from stemkube_api.settings import load_settings

    settings = local_settings(args, env)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = LocalStore(settings.objects)
        backend = LocalBackend(settings, store)
    except (OSError, SchemaError) as exc:
        raise CliError(f"--data-dir {settings.data_dir}: {exc}") from None
    # MAX_FILE_SIZE applies as in Kubernetes mode; local files have no presigned URLs.
    api_settings = replace(load_settings(env), presigned_downloads=False)
    return create_app(api_settings, backend, store)


def kubernetes_app(env: Mapping[str, str]) -> FastAPI:
    from stemkube_api.app import create_app
    from stemkube_api.kube import KubernetesBackend
    from stemkube_api.s3 import S3Store
    from stemkube_api.settings import load_settings

    settings = load_settings(env)
    try:
        backend = KubernetesBackend.from_settings(settings)
    except Exception as exc:
        raise CliError(f"cannot configure the Kubernetes client: {exc}") from None
    return create_app(settings, backend, S3Store.from_settings(settings))


def main(argv: Sequence[str] | None = None) -> int:
    from stemkube_api.settings import SettingsError

    env = os.environ
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.local:
        given = [f"--{f.replace('_', '-')}" for f in LOCAL_FLAGS if getattr(args, f) is not None]
        if given:
            parser.error(f"{', '.join(given)}: only with --local")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app = local_app(args, env) if args.local else kubernetes_app(env)
    except (CliError, SettingsError) as exc:
        print(f"stemkube-api: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=not args.local,
        timeout_graceful_shutdown=20,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
