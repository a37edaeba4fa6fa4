"""Each component's own storage credentials: the chart gives the API and the operator a Secret
each, the separator pods none (the operator presigns their URLs: test_job_link.py), and the
bundled MinIO's root credentials only to MinIO and its set-up hook. The set-up
(``files/minio-setup.sh``, the hook's script, with the policies of ``files/s3-policies/``) makes
one user per component; on a real MinIO each user can do what its part does and no more. The
e2e tiers install the chart with such users (``provision_users``)."""

import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from minio import Minio
from minio.error import S3Error

from tests.harness.minio import COMPONENTS, Credentials, MinioServer, provision_users
from tests.integration.test_chart import CHART, helm

pytestmark = pytest.mark.integration

EXTERNAL = [
    "--set=minio.enabled=false",
    "--set=storage.external.endpoint=https://s3.example.com",
    "--set=storage.external.apiSecret=s3-api",
    "--set=storage.external.operatorSecret=s3-operator",
]


def render(*values: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = helm("template", "rel", str(CHART), "--namespace=songs", *values).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


def secrets_read(workload: dict[str, Any]) -> set[str]:
    """The Secrets a workload's containers read storage credentials from, and any the
    operator would give its separator pods."""
    names = set()
    for container in workload["spec"]["template"]["spec"]["containers"]:
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("key") == "AWS_SECRET_ACCESS_KEY" or var["name"].endswith("_SECRET_KEY"):
                names.add(ref["name"])
            if var["name"] == "STEMKUBE_STORAGE_SECRET":  # what the separator pods once got
                names.add(f"separator pods: {var['value']}")
    return names


def test_each_component_reads_its_own_secret_and_only_minio_its_root() -> None:
    docs = render()
    root = "rel-stemkube-minio-root"
    assert secrets_read(docs["Deployment", "rel-stemkube-api"]) == {"rel-stemkube-storage-api"}
    assert secrets_read(docs["Deployment", "rel-stemkube-operator"]) == {
        "rel-stemkube-storage-operator"
    }
    assert secrets_read(docs["Deployment", "rel-stemkube-minio"]) == {root}
    assert secrets_read(docs["Job", "rel-stemkube-minio-bucket"]) == {
        root,
        *(f"rel-stemkube-storage-{c}" for c in COMPONENTS),
    }
    keys = {
        docs["Secret", name]["stringData"]["AWS_ACCESS_KEY_ID"]
        for name in (root, *(f"rel-stemkube-storage-{c}" for c in COMPONENTS))
    }
    assert len(keys) == 3  # three users, none shared
    assert {n for k, n in docs if k == "Secret" and n.startswith("rel-stemkube-storage-")} == {
        f"rel-stemkube-storage-{c}" for c in COMPONENTS
    }
    setup = docs["ConfigMap", "rel-stemkube-minio-setup"]["data"]
    assert {k for k in setup if k.endswith(".json")} == {f"{c}.json" for c in COMPONENTS}
    assert "arn:aws:s3:::stemkube/*" in setup["operator.json"]
    assert setup["setup.sh"] == (CHART / "files" / "minio-setup.sh").read_text()

    external = render(*EXTERNAL)
    assert secrets_read(external["Deployment", "rel-stemkube-api"]) == {"s3-api"}
    assert secrets_read(external["Deployment", "rel-stemkube-operator"]) == {"s3-operator"}
    assert not [k for k in external if k[0] == "Secret" and "storage" in k[1]]
    missing = helm(
        "template",
        "rel",
        str(CHART),
        *EXTERNAL,
        "--set=storage.external.operatorSecret=",
        check=False,
    )
    assert "storage.external.operatorSecret (or existingSecret) is required" in missing.stderr
    # A separator Secret is no setting any more: its values are refused, not ignored.
    old = helm(
        "template", "rel", str(CHART), *EXTERNAL, "--set=storage.external.separatorSecret=x",
        check=False,
    )  # fmt: skip
    assert "separatorSecret" in old.stderr
    assert old.returncode != 0


def client(server: MinioServer, user: Credentials) -> Minio:
    return Minio(server.endpoint, user.access_key, user.secret_key, secure=False)


def refused(call: Any, *args: Any) -> bool:
    try:
        call(*args)
    except S3Error as exc:
        return exc.code == "AccessDenied"
    return False


def test_the_set_up_makes_one_least_privilege_user_per_component(
    minio_server: MinioServer, tmp_path: Path
) -> None:
    bucket = "creds-test"
    users = provision_users(minio_server, minio_server.url, bucket, tmp_path)
    # Again with the same users, as each helm upgrade runs the hook: nothing changes.
    assert provision_users(minio_server, minio_server.url, bucket, tmp_path, users) == users
    root = minio_server.client()
    root.make_bucket("someone-elses")
    root.put_object("someone-elses", "secret.wav", io.BytesIO(b"x"), 1)
    song = b"RIFF" + bytes(100)
    root.put_object(bucket, "ns/inputs/j/input.wav", io.BytesIO(song), len(song))
    api, operator = (client(minio_server, users[c]) for c in COMPONENTS)

    # The operator's job link: a separator's output as a multipart upload begun, completed or
    # aborted by the operator (the parts come through URLs it presigns: test_job_link.py).
    upload_id = operator._create_multipart_upload(bucket, "ns/results/j.zip", {})
    listed = operator._list_multipart_uploads(bucket, prefix="ns/results/j.zip").uploads
    assert [u.upload_id for u in listed] == [upload_id]  # what the cleanup finalizer aborts
    operator._abort_multipart_upload(bucket, "ns/results/j.zip", upload_id)
    operator.put_object(bucket, "ns/results/j.zip", io.BytesIO(b"zip"), 3)
    # The operator sizes results, writes ledger entries, lists and deletes.
    assert operator.stat_object(bucket, "ns/results/j.zip").size == 3
    operator.put_object(bucket, "ns/usage/k/1-u-1", io.BytesIO(b""), 0)
    assert len(list(operator.list_objects(bucket, "ns/", recursive=True))) == 3
    operator.remove_object(bucket, "ns/usage/k/1-u-1")
    # The API does all of an upload's and a download's calls.
    upload_id = api._create_multipart_upload(bucket, "ns/inputs/k/input.wav", {})
    assert api._list_multipart_uploads(bucket).uploads
    api._abort_multipart_upload(bucket, "ns/inputs/k/input.wav", upload_id)
    api.remove_object(bucket, "ns/results/j.zip")
    # Nobody touches another bucket, or makes one.
    for user in (api, operator):
        assert refused(user.get_object, "someone-elses", "secret.wav")
        assert refused(user.make_bucket, "new-bucket")
