"""The API's configuration in Kubernetes mode, read once from the environment."""

import datetime
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from stemkube_api.sizes import format_size, parse_size
from stemkube_contract import scopes, webhooks
from stemkube_contract.limits import DEFAULT_MAX_FILE_SIZE, max_file_size_from_env
from stemkube_contract.models import Catalog, ModelsError, catalog_from_env
from stemkube_contract.options import LIMITS_ENV, Limits, parse_limits

TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")
# Kubernetes mode requires API keys unless this says off (the chart sets it from
# api.auth.enabled); local mode decides from its address and --no-auth (cli.py).
AUTH_ENV = "STEMKUBE_AUTH"
# off: no keys, everyone is the open caller; open-until-keys: so until the first key exists
# (checked per request); required: a valid key on every route but the open ones.
AuthMode = Literal["off", "open-until-keys", "required"]
AUTH_MODES: tuple[AuthMode, ...] = ("off", "open-until-keys", "required")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    namespace: str = "default"
    bucket: str = scopes.DEFAULT_BUCKET
    max_file_size: int = parse_size(DEFAULT_MAX_FILE_SIZE)
    presigned_downloads: bool = False
    presign_expiry: datetime.timedelta = datetime.timedelta(minutes=15)
    s3_endpoint: str = "https://s3.amazonaws.com"
    s3_public_endpoint: str | None = None  # the endpoint clients reach, for presigned URLs
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    ca_bundle: str | None = None
    kubeconfig: str | None = None  # None: in-cluster
    # The models this deployment serves and its limits on the costly options (the chart sets
    # both for the API and the operator from the same values).
    models: Catalog = field(default_factory=Catalog)
    limits: Limits = field(default_factory=Limits)
    # Origins whose browser pages may call the API (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    auth: AuthMode = "required"
    # The webhook of jobs that name none (STEMKUBE_WEBHOOK_URL; the chart's
    # webhooks.defaultUrl): stored with each such job when it is created.
    webhook_url: str | None = None
    # The prefix of every object key this API writes (Kubernetes mode: its namespace's storage
    # scope, ``storage_root``, so that its SeparationJobs pass the operator's and the admission
    # policy's confinement); empty in local mode.
    key_root: str = ""

    @property
    def max_file_size_text(self) -> str:
        return format_size(self.max_file_size)


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")


def parse_auth(env: Mapping[str, str]) -> AuthMode:
    """``STEMKUBE_AUTH``: keys are required unless it says off (unset: required)."""
    raw = env.get(AUTH_ENV, "").strip().lower()
    if raw in ("off", "false", "0", "no"):
        return "off"
    if raw in ("", "on", "true", "1", "yes", "required"):
        return "required"
    raise SettingsError(f"{AUTH_ENV} must be 'required' or 'off', not {raw!r}")


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def parse_origins(text: str) -> tuple[str, ...]:
    """``STEMKUBE_CORS_ORIGINS``: comma-separated origins, each scheme://host[:port] exactly as
    a browser sends it (no path, no trailing slash), or ``*`` for any."""
    origins = tuple(o.strip() for o in text.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise SettingsError(
                f"STEMKUBE_CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com"
            )
    return origins


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    try:
        max_size = max_file_size_from_env(env)  # the contract's: the separator reads it so too
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    expiry_raw = env.get("STEMKUBE_PRESIGN_EXPIRY_SECONDS") or "900"
    try:
        expiry = int(expiry_raw)
    except ValueError:
        raise SettingsError(
            f"STEMKUBE_PRESIGN_EXPIRY_SECONDS must be a number, not {expiry_raw!r}"
        ) from None
    if not 1 <= expiry <= 7 * 86400:
        raise SettingsError("STEMKUBE_PRESIGN_EXPIRY_SECONDS must be between 1 and 604800")
    try:
        models = catalog_from_env(env)
    except ModelsError as exc:
        raise SettingsError(f"models: {exc}") from None
    try:
        limits = parse_limits(env.get(LIMITS_ENV, ""))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    webhook_url = env.get(webhooks.DEFAULT_URL_ENV, "").strip() or None
    if webhook_url is not None and (problem := webhooks.url_problem(webhook_url)):
        raise SettingsError(f"{webhooks.DEFAULT_URL_ENV}: {problem}")
    return Settings(
        models=models,
        limits=limits,
        namespace=env.get("STEMKUBE_NAMESPACE") or env.get("POD_NAMESPACE") or "default",
        bucket=env.get("STEMKUBE_BUCKET") or scopes.DEFAULT_BUCKET,
        max_file_size=max_size,
        presigned_downloads=_bool(env, "STEMKUBE_PRESIGNED_DOWNLOADS"),
        presign_expiry=datetime.timedelta(seconds=expiry),
        s3_endpoint=env.get("AWS_ENDPOINT_URL_S3")
        or env.get("AWS_ENDPOINT_URL")
        or "https://s3.amazonaws.com",
        s3_public_endpoint=env.get("STEMKUBE_S3_PUBLIC_URL") or None,
        access_key=env.get("AWS_ACCESS_KEY_ID") or None,
        secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        session_token=env.get("AWS_SESSION_TOKEN") or None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        ca_bundle=env.get("AWS_CA_BUNDLE") or None,
        kubeconfig=env.get("KUBECONFIG") or None,
        cors_origins=parse_origins(env.get("STEMKUBE_CORS_ORIGINS", "")),
        auth=parse_auth(env),
        webhook_url=webhook_url,
    )


def storage_root(env: Mapping[str, str], namespace: str, bucket: str) -> str:
    """Kubernetes mode's key root: the storage scope of the API's namespace
    (``STEMKUBE_STORAGE_SCOPES``, ``stemkube_contract.scopes``), which must hold its bucket."""
    try:
        scope = scopes.scopes_from_env(env, bucket).of(namespace)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if scope.bucket not in (scopes.ANY_BUCKET, bucket):
        raise SettingsError(
            f"STEMKUBE_BUCKET {bucket!r} is outside the storage scope of namespace {namespace} "
            f"({scope.describe()}): the operator would refuse every job this API creates"
        )
    return scope.prefix
