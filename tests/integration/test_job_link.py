"""A separator pod can touch only its own job (issue #15 item 1): checked with REAL tokens (the
TokenRequest API, bound to real pods of the operator's Jobs, reviewed by the real API server)
and REAL presigned URLs against the real MinIO, through the real operator's job link.

The separator pods here stay Pending (the operator's node selector matches no node): a pod that
exists is all a bound token needs, and a pending pod keeps its job unfinished, so its input and
output can be asked for. The tests then play the pod with its token, as a compromised separator
would, and as other pods of the namespace would."""

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from minio.error import S3Error

from stemkube_contract import joblink
from stemkube_contract.resource import GROUP, PLURAL, VERSION
from tests.harness.audio import sine_wav
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.podrunner import bound_token
from tests.harness.stemkube import SEPARATOR_ACCOUNT, OperatorFactory
from tests.harness.waiting import wait_for
from tests.integration.test_operator import create, jobs_of, pods_of, read, upload

pytestmark = pytest.mark.integration

NOWHERE = json.dumps({"stemkube.io/test-no-such-node": "none"})


def token(cluster: Cluster, pod: client.V1Pod, audience: str | None) -> str:
    return bound_token(client.CoreV1Api(cluster.api), pod, audience, 600)


def ask(base: str, path: str, body: dict[str, Any], bearer: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if bearer is not None:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


def http(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(), dict(exc.headers)


def pending_pod(cluster: Cluster, namespace: str, cr: dict[str, Any]) -> client.V1Pod:
    uid = cr["metadata"]["uid"]
    pods: list[client.V1Pod] = wait_for(
        lambda: pods_of(cluster, namespace, uid) or None, 60, f"a pod for {uid}"
    )
    return pods[0]


def test_a_separator_pods_token_reaches_its_own_job_and_nothing_else(
    cluster: Cluster,
    stemkube_namespace: str,
    minio_server: MinioServer,
    bucket: str,
    start_operator: OperatorFactory,
) -> None:
    namespace, s3 = stemkube_namespace, minio_server.client()
    operator = start_operator(STEMKUBE_NODE_SELECTOR=NOWHERE)
    song, theirs = sine_wav(1.0), sine_wav(0.5, freq=330.0)
    upload(s3, bucket, "inputs/mine/song.wav", song)
    upload(s3, bucket, "inputs/theirs/song.wav", theirs)
    mine = create(cluster, namespace, "mine", bucket)
    other = create(cluster, namespace, "theirs", bucket)
    pod = pending_pod(cluster, namespace, mine)
    pending_pod(cluster, namespace, other)

    # What the pod gets: no storage credential, no API-server token, the link's projected one.
    spec = pod.spec
    assert spec.automount_service_account_token is False
    assert spec.service_account_name == SEPARATOR_ACCOUNT
    [container] = spec.containers
    env = {e.name: e for e in container.env}
    assert not [n for n in env if n.startswith("AWS_")]
    assert not [e for e in env.values() if e.value_from and e.value_from.secret_key_ref]
    assert not container.env_from
    [projected] = [v.projected for v in spec.volumes if v.projected]
    [source] = projected.sources
    assert source.service_account_token.audience == joblink.AUDIENCE
    assert env[joblink.TOKEN_ENV].value == joblink.token_path()

    link = operator.link_url
    bearer = token(cluster, pod, joblink.AUDIENCE)

    # Its own job: run it, with a presigned GET of exactly its input.
    status, answer = ask(link, joblink.MEMBER, {"name": "mine"}, bearer)
    assert status == 200, answer
    member = joblink.MemberAnswer.from_json(answer)
    assert (member.run, member.uid) == (True, mine["metadata"]["uid"])
    assert member.input_url
    got = http("GET", member.input_url)
    assert (got[0], got[1]) == (200, song)
    forged = member.input_url.replace("inputs/mine/song.wav", "inputs/theirs/song.wav")
    assert http("GET", forged)[0] == 403  # the signature covers the key

    # Another job of the same namespace, by every path: refused, nothing touched.
    for path, body in (
        (joblink.MEMBER, {"name": "theirs"}),
        (joblink.PROGRESS, {"name": "theirs", "progress": 99}),
        (joblink.PROGRESS, {"name": "theirs", "outcome": {"exitCode": 2, "message": "x"}}),
        (joblink.UPLOAD_BEGIN, {"name": "theirs"}),
        (joblink.UPLOAD_PART, {"name": "theirs", "uploadId": "u", "part": 1}),
        (joblink.UPLOAD_ABORT, {"name": "theirs", "uploadId": "u"}),
    ):
        status, answer = ask(link, path, body, bearer)
        assert status == 403, (path, status, answer)
        assert "error" in answer
    theirs_status = read(cluster, namespace, "theirs").get("status") or {}
    assert theirs_status.get("progress") != 99
    assert "outcome" not in theirs_status

    # Its progress lands on its own status.
    status, answer = ask(link, joblink.PROGRESS, {"name": "mine", "progress": 42}, bearer)
    assert (status, answer) == (200, {"gone": False})
    assert wait_for(
        lambda: (read(cluster, namespace, "mine").get("status") or {}).get("progress") == 42,
        10,
        "progress 42 on mine",
    )

    # Its output: parts to presigned URLs, completed by the operator on its own key only.
    status, begun = ask(link, joblink.UPLOAD_BEGIN, {"name": "mine"}, bearer)
    assert status == 200, begun
    upload_id = begun["uploadId"]
    status, part = ask(
        link, joblink.UPLOAD_PART, {"name": "mine", "uploadId": upload_id, "part": 1}, bearer
    )
    assert status == 200, part
    assert "results/mine.zip" in part["url"]
    stolen = part["url"].replace("results/mine.zip", "results/theirs.zip")
    assert http("PUT", stolen, b"overwritten")[0] == 403
    put = http("PUT", part["url"], b"PK stems")
    assert put[0] == 200
    etag = {k.lower(): v for k, v in put[2].items()}["etag"]
    body = {"name": "mine", "uploadId": upload_id, "parts": [{"part": 1, "etag": etag}]}
    status, answer = ask(link, joblink.UPLOAD_COMPLETE, body, bearer)
    assert (status, answer) == (200, {"gone": False})
    assert s3.get_object(bucket, "results/mine.zip").read() == b"PK stems"
    with pytest.raises(S3Error):
        s3.stat_object(bucket, "results/theirs.zip")

    # Without a token, with one of another audience, or a token of another pod: refused.
    assert ask(link, joblink.MEMBER, {"name": "mine"}, None)[0] == 401
    assert ask(link, joblink.MEMBER, {"name": "mine"}, "not-a-token")[0] == 401
    assert ask(link, joblink.MEMBER, {"name": "mine"}, token(cluster, pod, None))[0] == 401
    core = client.CoreV1Api(cluster.api)
    impostor = core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "impostor"},
            "spec": {
                "serviceAccountName": SEPARATOR_ACCOUNT,
                "nodeSelector": json.loads(NOWHERE),
                "containers": [{"name": "c", "image": "stemkube/separator:dev"}],
            },
        },
    )
    status, answer = ask(
        link, joblink.MEMBER, {"name": "mine"}, token(cluster, impostor, joblink.AUDIENCE)
    )
    assert status == 403, answer

    # The link's token is no key to the API server, and the separator's account has no
    # permission there at all.
    for bearer_token, expected in ((bearer, 401), (token(cluster, pod, None), 403)):
        configuration = client.Configuration()
        configuration.host = cluster.api.configuration.host
        configuration.ssl_ca_cert = cluster.api.configuration.ssl_ca_cert
        configuration.api_key = {"authorization": f"Bearer {bearer_token}"}
        objects = client.CustomObjectsApi(client.ApiClient(configuration))
        with pytest.raises(ApiException) as refused:
            objects.get_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "theirs")
        assert refused.value.status == expected
        with pytest.raises(ApiException) as refused:
            objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, "theirs", {"status": {"progress": 1}}
            )
        assert refused.value.status == expected
    assert jobs_of(cluster, namespace, other["metadata"]["uid"])  # untouched, still there
    assert s3.get_object(bucket, "inputs/theirs/song.wav").read() == theirs

    # A job deleted while its pod uploads: its unfinished upload goes with its objects.
    status, begun = ask(link, joblink.UPLOAD_BEGIN, {"name": "mine"}, bearer)
    assert status == 200, begun

    def uploads_of(key: str) -> list[str]:
        listed = s3._list_multipart_uploads(bucket, prefix=key)
        return [str(u.upload_id) for u in listed.uploads if u.object_name == key]

    assert uploads_of("results/mine.zip") == [begun["uploadId"]]
    client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "mine"
    )
    wait_for(lambda: not uploads_of("results/mine.zip"), 30, "mine's upload aborted")
    wait_for(
        lambda: (
            not any(
                o.object_name == "results/mine.zip" for o in s3.list_objects(bucket, "results/")
            )
        ),
        30,
        "mine's result removed",
    )
