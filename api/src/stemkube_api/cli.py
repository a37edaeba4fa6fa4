"""``stemkube-api``: the REST API's process (uvicorn), in Kubernetes mode or local mode; and
``stemkube-api keys ...``, its API keys (``keys_cli``)."""

import argparse
import datetime
import importlib.util
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from stemkube_api.startup import Launch, ReadyServer, local_summary
from stemkube_contract import webhooks
from stemkube_contract.addresses import AddressPolicy
from stemkube_contract.models import (
    DEFAULT_MODEL,
    MODELS_ENV,
    PRETRAINED,
    Catalog,
    Model,
    ModelsError,
    parse_catalog,
)
from stemkube_contract.options import DEFAULT_PRECISION, PRECISION_ENV, PRECISIONS

if TYPE_CHECKING:
    from stemkube_api.auth.store import KeyStore
    from stemkube_api.local.settings import LocalSettings
    from stemkube_api.metrics import MetricsServer
    from stemkube_api.settings import AuthMode

LOCAL_FLAGS = (
    "data_dir",
    "workers",
    "model",
    "models",
    "model_repo",
    "ttl",
    "precision",
    "webhook_secret_file",
)
DESCRIBE_TIMEOUT = 300.0
KUBERNETES_METRICS_PORT = 9090
# (folder) -> the models in it, with their sources
Discover = Callable[[Path], list[Model]]


class CliError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemkube-api",
        description=(
            "The stemkube REST API. With --local it runs separations on this machine (no "
            "cluster, files on local disk). Without it, Kubernetes mode reads its settings from "
            "the environment: STEMKUBE_NAMESPACE, STEMKUBE_BUCKET, MAX_FILE_SIZE, "
            "STEMKUBE_PRESIGNED_DOWNLOADS, STEMKUBE_AUTH, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_CA_BUNDLE, KUBECONFIG (else in-cluster). "
            "API keys: stemkube-api keys --help."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus metrics on this port of --host, apart from the API's (default: "
        f"{KUBERNETES_METRICS_PORT} in Kubernetes mode, none in local mode; 0: none)",
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without API keys: anyone who reaches the port may do anything (Kubernetes "
        "mode: also STEMKUBE_AUTH=off). Default: keys required, except local mode on a "
        "loopback address before its first key",
    )
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
        help="model of uploads that name none (env STEMKUBE_MODEL; default htdemucs if served, "
        "else the first model served)",
    )
    local.add_argument(
        "--models",
        type=Path,
        help=f"a JSON file declaring the models served (env {MODELS_ENV}, the JSON itself): "
        '{"default": NAME, "models": [{"name", "sources", "repo"?}]}; default: the models in '
        "--model-repo, else the pretrained Demucs models",
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
    local.add_argument(
        "--precision",
        choices=PRECISIONS,
        help=f"the model's arithmetic in every separation (env {PRECISION_ENV}; default "
        f"{DEFAULT_PRECISION}: TF32 on a GPU that has it, else fp32)",
    )
    local.add_argument(
        "--webhook-secret-file",
        type=Path,
        help="file whose content signs the webhooks (env STEMKUBE_WEBHOOK_SECRET gives the "
        "secret itself; default: one generated in the data folder, webhook-secret)",
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


def discover_models(folder: Path) -> list[Model]:
    """The models in a folder of weights, as the separator loads them (a child process: the
    API process does not import torch)."""
    done = subprocess.run(
        [sys.executable, "-m", "stemkube_separator.describe", str(folder)],
        capture_output=True,
        text=True,
        timeout=DESCRIBE_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise CliError(f"--model-repo {folder}: cannot read its models: {done.stderr.strip()}")
    found = parse_catalog(done.stdout) if json.loads(done.stdout)["models"] else None
    return list(found.models) if found else []


def _as_pretrained(model: Model) -> Model:
    """A folder's model under a pretrained name (a stand-in, or the real weights) is listed as
    the pretrained one is: its description, its stems in the usual order."""
    known = {m.name: m for m in PRETRAINED}.get(model.name)
    if known is None or set(known.sources) != set(model.sources):
        return model
    return replace(model, sources=known.sources, description=known.description)


def _catalog(
    args: argparse.Namespace, env: Mapping[str, str], repo: Path | None, discover: Discover
) -> Catalog:
    """Declared (--models, $STEMKUBE_MODELS), else the models in --model-repo, else the
    pretrained Demucs models; the default: --model, $STEMKUBE_MODEL, the declaration's own."""
    try:
        if args.models is not None:
            catalog = parse_catalog(args.models.read_text())
        elif env.get(MODELS_ENV):
            catalog = parse_catalog(env[MODELS_ENV])
        elif repo is not None:
            found = [_as_pretrained(m) for m in discover(repo)]
            if not found:
                raise CliError(f"--model-repo {repo}: no model in it (<name>.yaml, <sig>.th)")
            names = [m.name for m in found]
            catalog = Catalog(tuple(found), DEFAULT_MODEL if DEFAULT_MODEL in names else names[0])
        else:
            catalog = Catalog()
    except OSError as exc:
        raise CliError(f"--models {args.models}: {exc}") from None
    except ModelsError as exc:
        raise CliError(f"{'--models' if args.models else MODELS_ENV}: {exc}") from None
    chosen = args.model or env.get("STEMKUBE_MODEL")
    if chosen:
        if catalog.get(chosen) is None:
            where = "--model" if args.model else "STEMKUBE_MODEL"
            raise CliError(
                f"{where}: {chosen!r} is not one of the models served: {', '.join(catalog.names)}"
            )
        catalog = catalog.with_default(chosen)
    return catalog


def local_settings(
    args: argparse.Namespace, env: Mapping[str, str], discover: Discover = discover_models
) -> "LocalSettings":
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
    repo_text = args.model_repo or env.get("STEMKUBE_MODEL_REPO") or None
    repo = Path(repo_text).resolve() if repo_text else None
    if repo is not None and not repo.is_dir():
        raise CliError(f"--model-repo {repo}: no such folder")
    models = _catalog(args, env, repo, discover)
    ttl_seconds = args.ttl
    if ttl_seconds is None:
        ttl_seconds = _env_int(env, "STEMKUBE_TTL_SECONDS_AFTER_FINISHED") or DEFAULT_TTL_SECONDS
    if ttl_seconds <= 0:
        raise CliError(f"--ttl must be positive, not {ttl_seconds}")
    ttl = datetime.timedelta(seconds=ttl_seconds)
    precision = args.precision or env.get(PRECISION_ENV) or DEFAULT_PRECISION
    if precision not in PRECISIONS:
        raise CliError(f"{PRECISION_ENV}: {precision!r} is not one of {', '.join(PRECISIONS)}")
    data_dir = (args.data_dir or default_data_dir(env)).resolve()
    try:
        backoff = webhooks.Backoff.from_env(env)
        policy = AddressPolicy.from_env(env)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return LocalSettings(
        data_dir=data_dir,
        workers=workers,
        models=models,
        model_repo=repo,
        ttl=ttl,
        expiry_interval=expiry_interval(env, ttl),
        gpus=gpus,
        precision=precision,
        webhook_secret_file=args.webhook_secret_file,
        webhook_backoff=backoff,
        url_policy=policy,
        public_url=env.get("STEMKUBE_PUBLIC_URL") or None,
    )


def metrics_server(args: argparse.Namespace, default: int | None) -> "MetricsServer | None":
    from stemkube_api.metrics import MetricsServer

    port = args.metrics_port if args.metrics_port is not None else default
    if not port:
        return None
    if port == args.port:
        raise CliError(f"--metrics-port {port} is the API's --port: give the metrics their own")
    return MetricsServer(args.host, port)


def refusal_without_keys(host: str, data_dir: Path) -> str:
    return (
        f"--host {host} is not a loopback address and {data_dir / 'keys.sqlite3'} holds no "
        "API key: anyone who reaches the port could use the service. Create a key first "
        f"(stemkube-api keys create --local --data-dir {data_dir} --name NAME --tenant TENANT "
        "--role admin), or pass --no-auth to serve without keys"
    )


def local_keys(
    args: argparse.Namespace, env: Mapping[str, str], data_dir: Path
) -> "tuple[KeyStore | None, AuthMode]":
    """The key store and auth mode of local mode (modes.local_mode): keys in the data folder,
    read per request."""
    from stemkube_api.auth.modes import local_mode
    from stemkube_api.local.keys import SqliteKeyStore
    from stemkube_api.settings import parse_auth

    no_auth = args.no_auth or parse_auth(env) == "off"
    if no_auth:
        return None, "off"
    try:
        keys = SqliteKeyStore(data_dir)
        has_keys = keys.any_keys()
    except (OSError, sqlite3.Error) as exc:
        raise CliError(f"--data-dir {data_dir}: the API keys: {exc}") from None
    mode = local_mode(args.host, no_auth, has_keys)
    if mode is None:
        raise CliError(refusal_without_keys(args.host, data_dir))
    return keys, mode


def local_app(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[FastAPI, Launch]:
    from stemkube_api.app import create_app
    from stemkube_api.local.backend import LocalBackend
    from stemkube_api.local.records import SchemaError
    from stemkube_api.local.store import LocalStore
    from stemkube_api.local.webhooks import SecretError
    from stemkube_api.settings import load_settings

    settings = local_settings(args, env)
    keys, mode = local_keys(args, env, settings.data_dir)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = LocalStore(settings.objects)
        backend = LocalBackend(settings, store)
    except (OSError, SchemaError, SecretError) as exc:
        raise CliError(f"--data-dir {settings.data_dir}: {exc}") from None
    # MAX_FILE_SIZE applies as in Kubernetes mode; local files have no presigned URLs.
    api_settings = replace(
        load_settings(env), presigned_downloads=False, models=settings.models, auth=mode
    )
    logging.getLogger(__name__).log(
        logging.WARNING if mode == "off" else logging.INFO,
        "API keys: %s",
        {
            "off": "off (--no-auth, STEMKUBE_AUTH=off): anyone who reaches the port may use it",
            "open-until-keys": f"open on loopback until a key exists in {settings.data_dir}",
            "required": f"required (keys in {settings.data_dir})",
        }[mode],
    )
    app = create_app(api_settings, backend, store, keys, metrics_server(args, None))
    default = settings.models.default
    summary = local_summary(
        list(settings.models.names),
        default,
        str(settings.model_repo) if settings.model_repo else None,
        str(settings.data_dir),
        settings.ttl.total_seconds(),
        settings.workers,
    )
    return app, Launch(
        summary, lambda: backend.model_problem(default), keys_required=mode == "required"
    )


def kubernetes_app(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[FastAPI, Launch]:
    from stemkube_api.app import create_app
    from stemkube_api.auth.modes import kubernetes_mode
    from stemkube_api.kubernetes.backend import KubernetesBackend, api_client
    from stemkube_api.kubernetes.keys import SecretKeyStore
    from stemkube_api.kubernetes.store import S3Store
    from stemkube_api.settings import load_settings, storage_root

    settings = load_settings(env)
    settings = replace(
        settings,
        auth=kubernetes_mode(settings.auth, args.no_auth),
        key_root=storage_root(env, settings.namespace, settings.bucket),
    )
    store = S3Store.from_settings(settings)
    try:
        backend = KubernetesBackend.from_settings(settings, ledger=store.keys)
        # The keys' Secrets, followed by their own watch (list + watch of one namespace).
        keys = (
            None
            if settings.auth == "off"
            else SecretKeyStore(api_client(settings), settings.namespace)
        )
    except Exception as exc:
        raise CliError(f"cannot configure the Kubernetes client: {exc}") from None
    if keys is None:
        logging.getLogger(__name__).warning(
            "API keys: off (STEMKUBE_AUTH=off): anyone who reaches the port may use the service"
        )
    app = create_app(settings, backend, store, keys, metrics_server(args, KUBERNETES_METRICS_PORT))
    summary = (
        f"Kubernetes mode, SeparationJobs in namespace {settings.namespace}, "
        f"objects in bucket {settings.bucket}"
    )
    return app, Launch(summary, keys_required=settings.auth != "off")


def main(argv: Sequence[str] | None = None) -> int:
    from stemkube_api.settings import SettingsError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["keys"]:
        from stemkube_api import keys_cli

        return keys_cli.main(argv[1:])
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
        app, launch = local_app(args, env) if args.local else kubernetes_app(args, env)
    except (CliError, SettingsError) as exc:
        print(f"stemkube-api: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=not args.local,
        timeout_graceful_shutdown=20,
    )
    server = ReadyServer(config, launch)
    server.run()
    return 0 if server.started else 3  # as uvicorn.run: the port taken, a failed startup


if __name__ == "__main__":
    sys.exit(main())
