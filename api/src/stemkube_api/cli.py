"""``stemkube-api``: the REST API's process (uvicorn)."""

import argparse
import logging
import sys
from collections.abc import Sequence

LOCAL_MODE_NOTICE = (
    'stemkube-api: local mode arrives with the issue "Local mode"; '
    "until then the API runs in Kubernetes mode only (KUBECONFIG or in-cluster, and S3)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemkube-api",
        description=(
            "The stemkube REST API. Kubernetes mode reads its settings from the environment: "
            "STEMKUBE_NAMESPACE, STEMKUBE_BUCKET, MAX_FILE_SIZE, STEMKUBE_PRESIGNED_DOWNLOADS, "
            "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, "
            "AWS_CA_BUNDLE, KUBECONFIG (else in-cluster)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--local", action="store_true", help="run separations on this machine (no cluster)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.local:
        print(LOCAL_MODE_NOTICE, file=sys.stderr)
        return 2

    import uvicorn

    from stemkube_api.app import create_app
    from stemkube_api.kube import KubernetesBackend
    from stemkube_api.s3 import S3Store
    from stemkube_api.settings import SettingsError, load_settings

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"stemkube-api: {exc}", file=sys.stderr)
        return 2
    try:
        backend = KubernetesBackend.from_settings(settings)
    except Exception as exc:
        print(f"stemkube-api: cannot configure the Kubernetes client: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, backend, S3Store.from_settings(settings))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
