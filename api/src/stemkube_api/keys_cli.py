"""``stemkube-api keys create|list|revoke``: API keys, in local mode's data folder (``--local``)
or in the Secrets of a namespace (Kubernetes mode; what ``kubectl exec deploy/<api> --`` runs
in the API's pod).

``create`` prints the key, once, and nothing else on standard output (``KEY=$(stemkube-api keys
create ...)``); what it says besides goes to standard error. Only the key's hash is stored.
"""

import argparse
import datetime
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stemkube_api.auth import admin, keys
from stemkube_api.auth.store import KeyStore
from stemkube_api.sizes import parse_size

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KeysError(Exception):
    pass


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_argument_group("where the keys are")
    group.add_argument(
        "--local", action="store_true", help="local mode's keys (<data-dir>/keys.sqlite3)"
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        help="with --local (env STEMKUBE_DATA_DIR; default ~/.local/share/stemkube)",
    )
    group.add_argument(
        "--namespace",
        help="without --local: the API's namespace (default: STEMKUBE_NAMESPACE, else the "
        "kubeconfig's or the pod's namespace); the cluster from KUBECONFIG, else in-cluster, "
        "else ~/.kube/config",
    )
    top = argparse.ArgumentParser(
        prog="stemkube-api keys",
        description="Manage the API keys of a stemkube service. Keys are shown once, at "
        "creation; only their SHA-256 hashes are stored.",
    )
    commands = top.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", parents=[where], help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="unique name, e.g. ci or alice-laptop")
    create.add_argument("--tenant", required=True, help="whose jobs the key sees and creates")
    create.add_argument(
        "--role",
        choices=keys.ROLES,
        default="user",
        help="admin: sees every tenant's jobs (default user)",
    )
    create.add_argument("--expires", help="30d, 12h, 2w, or a moment: 2027-01-01T00:00:00Z")
    create.add_argument(
        "--requests-per-minute", type=_positive_int, help="per API replica (429 past it)"
    )
    create.add_argument(
        "--max-active-jobs",
        type=_positive_int,
        help="jobs queued or running at once (429 past it, at upload)",
    )
    create.add_argument(
        "--audio-minutes-per-day",
        type=_positive_float,
        help="minutes of audio its jobs created in 24 hours may hold (counted once decoded)",
    )
    create.add_argument(
        "--max-bytes-stored",
        type=_size,
        help="uploads and results kept, e.g. 10GB (403 past it, at upload)",
    )
    listing = commands.add_parser("list", parents=[where], help="the keys (never their hashes)")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    revoke = commands.add_parser(
        "revoke", parents=[where], help="remove a key: refused from then on (seconds)"
    )
    revoke.add_argument("name_or_id")
    return top


def local_store(data_dir: Path | None, env: Mapping[str, str]) -> KeyStore:
    from stemkube_api.local.keys import SqliteKeyStore
    from stemkube_api.local.settings import default_data_dir

    return SqliteKeyStore((data_dir or default_data_dir(env)).resolve())


def _kube_client(env: Mapping[str, str]) -> tuple[Any, str | None]:
    """The cluster (KUBECONFIG, else in-cluster, else ~/.kube/config) and its namespace."""
    from kubernetes import client, config

    try:
        if not env.get("KUBECONFIG") and env.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            in_pod = SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.is_file() else None
            return client.ApiClient(), env.get("POD_NAMESPACE") or in_pod
        path = env.get("KUBECONFIG") or None
        _, active = config.list_kube_config_contexts(config_file=path)
        namespace = ((active or {}).get("context") or {}).get("namespace")
        return config.new_client_from_config(config_file=path), namespace
    except (config.ConfigException, OSError) as exc:
        raise KeysError(
            f"no cluster to keep keys in ({exc}); set KUBECONFIG, or use --local --data-dir DIR"
        ) from None


def kube_store(namespace: str | None, env: Mapping[str, str]) -> tuple[KeyStore, str]:
    from stemkube_api.kubernetes.keys import SecretKeyStore

    api, own = _kube_client(env)
    chosen = namespace or env.get("STEMKUBE_NAMESPACE") or own or "default"
    return SecretKeyStore(api, chosen, watch=False), chosen


def _quotas(args: argparse.Namespace) -> keys.Quotas:
    return keys.Quotas(
        requests_per_minute=args.requests_per_minute,
        active_jobs=args.max_active_jobs,
        audio_minutes_per_day=args.audio_minutes_per_day,
        bytes_stored=args.max_bytes_stored,
    )


def create(args: argparse.Namespace, store: KeyStore, where: str) -> int:
    now = datetime.datetime.now(datetime.UTC)
    try:
        expires = admin.parse_expiry(args.expires, now) if args.expires else None
        new = keys.create(args.name, args.tenant, args.role, now, expires, _quotas(args))
    except ValueError as exc:
        raise KeysError(str(exc)) from None
    # Names are how people revoke keys: one key per name.
    taken = [r for r in store.records() if r.name == args.name]
    if taken:
        raise KeysError(
            f"a key named {args.name!r} exists in {where} (id {taken[0].key_id}); revoke it "
            "first or choose another name"
        )
    store.add(new.record)
    record = new.record
    until = f", expires {record.expires:%Y-%m-%dT%H:%M:%SZ}" if record.expires else ""
    print(
        f"created key {record.name!r} (id {record.key_id}, tenant {record.tenant}, role "
        f"{record.role}{until}) in {where}; it is shown once and cannot be recovered: keep it "
        "now. Send it as 'Authorization: Bearer <key>'.",
        file=sys.stderr,
    )
    print(new.plaintext)
    return 0


def list_keys(args: argparse.Namespace, store: KeyStore) -> int:
    now = datetime.datetime.now(datetime.UTC)
    records = store.records()
    if args.json:
        print(json.dumps([admin.describe(r, now) for r in records], indent=2))
    else:
        print(admin.table(records, now))
    return 0


def revoke(args: argparse.Namespace, store: KeyStore, where: str) -> int:
    gone = store.revoke(args.name_or_id)
    if not gone:
        raise KeysError(f"no key named or with id {args.name_or_id!r} in {where}")
    for record in gone:
        print(f"revoked key {record.name!r} (id {record.key_id}, tenant {record.tenant})")
    return 0


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.local:
        if args.namespace:
            raise KeysError("--namespace is for Kubernetes mode, not with --local")
        store = local_store(args.data_dir, env)
        where = f"{getattr(store, 'path', 'the data folder')}"
    else:
        if args.data_dir:
            raise KeysError("--data-dir: only with --local")
        store, namespace = kube_store(args.namespace, env)
        where = f"namespace {namespace}"
    if args.command == "create":
        return create(args, store, where)
    if args.command == "list":
        return list_keys(args, store)
    return revoke(args, store, where)


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args, os.environ if env is None else env)
    except KeysError as exc:
        print(f"stemkube-api keys: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the store's own errors (Kubernetes API, SQLite): no traceback
        from stemkube_api.kubernetes.watch import explain

        print(f"stemkube-api keys: {explain(exc)}", file=sys.stderr)
        return 1
