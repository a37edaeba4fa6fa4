"""The job link (operator side): the pure readings of the API's answers, the link's
configuration, and the HTTP server end to end in this process.

What is faked: the Kubernetes API server, as ``FakeApiServer``, a ``kubernetes.client.ApiClient``
whose ``call_api`` answers from dicts in memory (TokenReview, a pod, Jobs built by
``jobspec``, SeparationJobs, and the status subresource's JSON and merge patches, applied as the
API server applies them for the fields the link writes); and the object storage, as
``FakeStorage``, a ``Storage`` that records its calls and makes up URLs. The real kubernetes
client's request building (paths, headers, bodies) runs; nothing goes over a network but the
link's own HTTP on 127.0.0.1. The integration tier checks the same against a real cluster."""

import copy
import http.client
import json
import logging
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import kopf
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from stemkube_contract import joblink
from stemkube_contract.batch import OUTCOME_FIELD, skip_reason
from stemkube_operator.config import (
    LINK_PORT_ENV,
    LINK_SERVICE_ENV,
    ConfigError,
    OperatorConfig,
    load_config,
    resolve_link_url,
    service_url,
)
from stemkube_operator.jobspec import build_batch_job, build_job
from stemkube_operator.kube import LinkKube
from stemkube_operator.link import Link, serve_link, status_ops
from stemkube_operator.linkauth import (
    POD_NAME_EXTRA,
    POD_UID_EXTRA,
    UnauthorizedError,
    identity_of,
    job_owner_of,
    members_of,
)
from stemkube_operator.storage import PartsError, Storage

NS = "music"
SA = "stemkube-separator"
TOKEN = "eyJ-the-pods-token-do-not-log"
POD, POD_UID = "job-1-x7k2p", "pod-uid-1"


def separation_job(name: str, uid: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "stemkube.io/v1alpha1",
        "kind": "SeparationJob",
        "metadata": {"name": name, "namespace": NS, "uid": uid},
        "spec": {
            "input": {"bucket": "stemkube", "key": f"music/in/{name}.mp3", "filename": "s.mp3"},
            "output": {"bucket": "stemkube", "key": f"music/out/{name}.zip"},
            "model": "htdemucs",
        },
        "status": {"phase": "Running", **status},
    }


def review_status(
    namespace: str = NS, account: str = SA, pod: str = POD, pod_uid: str = POD_UID
) -> dict[str, Any]:
    return {
        "authenticated": True,
        "audiences": [joblink.AUDIENCE],
        "user": {
            "username": f"system:serviceaccount:{namespace}:{account}",
            "uid": "sa-uid",
            "extra": {POD_NAME_EXTRA: [pod], POD_UID_EXTRA: [pod_uid]},
        },
    }


# -- the pure parts


def test_a_review_gives_the_pod() -> None:
    who = identity_of(review_status(), SA)
    assert (who.namespace, who.pod_name, who.pod_uid) == (NS, POD, POD_UID)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.update(authenticated=False),
        lambda s: s.pop("authenticated"),
        lambda s: s.update(audiences=["https://kubernetes.default.svc"]),
        lambda s: s.pop("audiences"),
        lambda s: s["user"].update(username=f"system:serviceaccount:{NS}:default"),
        lambda s: s["user"].update(username=f"system:serviceaccount:{NS}:{SA}:x"),
        lambda s: s["user"].update(username="alice"),
        lambda s: s["user"].update(username=f"system:serviceaccount::{SA}"),
        lambda s: s["user"]["extra"].pop(POD_NAME_EXTRA),
        lambda s: s["user"]["extra"].pop(POD_UID_EXTRA),
        lambda s: s["user"]["extra"].update({POD_NAME_EXTRA: [POD, "other"]}),
        lambda s: s["user"]["extra"].update({POD_UID_EXTRA: POD_UID}),
    ],
)
def test_a_review_refused(change: Any) -> None:
    status = review_status()
    change(status)
    with pytest.raises(UnauthorizedError):
        identity_of(status, SA)


def test_members_of_a_single_and_of_a_batch_job() -> None:
    config = OperatorConfig()
    a, b = separation_job("a", "u-a"), separation_job("b", "u-b")
    assert members_of(build_job(a, config)) == {"a": "u-a"}
    assert members_of(build_batch_job([a, b], config)) == {"a": "u-a", "b": "u-b"}
    job = build_job(a, config)
    job["metadata"]["ownerReferences"].append(
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": "u-x"}
    )
    assert members_of(job) == {"a": "u-a"}
    assert members_of({"metadata": {}}) == {}


def test_the_pods_job_is_its_controller() -> None:
    pod = {
        "metadata": {
            "ownerReferences": [
                {"kind": "Job", "name": "other", "uid": "j-0", "controller": False},
                {"kind": "Job", "name": "job-1", "uid": "j-1", "controller": True},
            ]
        }
    }
    assert job_owner_of(pod) == ("job-1", "j-1")
    assert job_owner_of({"metadata": {}}) is None


@pytest.mark.parametrize(
    ("cr", "why"),
    [
        (separation_job("a", "u-a"), None),
        (separation_job("a", "u-a", phase="Pending"), None),
        (None, "gone"),
        (separation_job("a", "u-new"), "gone"),
        (
            {**separation_job("a", "u-a"), "metadata": {"uid": "u-a", "deletionTimestamp": "t"}},
            "being deleted",
        ),
        (separation_job("a", "u-a", **{OUTCOME_FIELD: {"exitCode": 0}}), "exit code 0"),
        (separation_job("a", "u-a", phase="Completed"), "phase Completed"),
        (separation_job("a", "u-a", phase="Failed"), "phase Failed"),
    ],
)
def test_whether_a_member_runs(cr: dict[str, Any] | None, why: str | None) -> None:
    said = skip_reason(cr, "u-a")
    if why is None:
        assert said is None
    else:
        assert said is not None
        assert why in said


def test_a_report_becomes_a_json_patch_on_the_uid() -> None:
    report = joblink.ProgressReport("a", progress=40, audio_seconds=12.5, outcome=(0, "ok"))
    ops = status_ops("u-a", joblink.report_patch(report))
    assert ops[0] == {"op": "test", "path": "/metadata/uid", "value": "u-a"}
    status = joblink.report_patch(report)["status"]
    assert ops[1:] == [{"op": "add", "path": f"/status/{k}", "value": v} for k, v in status.items()]
    assert status_ops("u", {"status": {"a/b~c": 1}})[1]["path"] == "/status/a~1b~0c"


# -- the configuration


def test_link_configuration_from_the_environment() -> None:
    config = load_config({})
    assert (config.link_port, config.link_url, config.link_service) == (
        joblink.DEFAULT_PORT,
        "",
        None,
    )
    config = load_config({LINK_PORT_ENV: "9000", joblink.URL_ENV: "http://10.0.0.1:9000/"})
    assert (config.link_port, config.link_url) == (9000, "http://10.0.0.1:9000")
    assert load_config({LINK_SERVICE_ENV: "link", "POD_NAMESPACE": "ops"}).link_service == (
        "ops",
        "link",
    )
    assert load_config({LINK_SERVICE_ENV: "sys/link"}).link_service == ("sys", "link")
    for env in ({joblink.URL_ENV: "10.0.0.1:9000"}, {LINK_SERVICE_ENV: "a/b/c"}):
        with pytest.raises(ConfigError):
            load_config(env)


def test_storage_secret_is_no_more() -> None:
    assert not hasattr(load_config({"STEMKUBE_STORAGE_SECRET": "s"}), "storage_secret")


def service(ip: str, *ports: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "link", "namespace": "ops"},
        "spec": {"clusterIP": ip, "ports": list(ports)},
    }


def test_the_link_url_of_a_service() -> None:
    named = service("10.96.0.20", {"name": "http", "port": 80}, {"name": "link", "port": 8082})
    assert service_url(named) == "http://10.96.0.20:8082"
    assert service_url(service("10.96.0.20", {"port": 81})) == "http://10.96.0.20:81"
    assert service_url(service("fd00::20", {"port": 81})) == "http://[fd00::20]:81"
    for bad in (service("None", {"port": 81}), service("10.96.0.20")):
        with pytest.raises(ConfigError):
            service_url(bad)


def test_resolving_the_link_url() -> None:
    given = OperatorConfig(link_url="http://x:1")
    assert resolve_link_url(given, lambda ns, name: None) is given
    with pytest.raises(ConfigError, match=f"{joblink.URL_ENV}.*{LINK_SERVICE_ENV}"):
        resolve_link_url(OperatorConfig(), lambda ns, name: None)
    asked: list[tuple[str, str]] = []

    def read(ns: str, name: str) -> dict[str, Any] | None:
        asked.append((ns, name))
        return service("10.96.0.20", {"name": "link", "port": 8082})

    config = resolve_link_url(OperatorConfig(link_service=("ops", "link")), read)
    assert config.link_url == "http://10.96.0.20:8082"
    assert asked == [("ops", "link")]
    with pytest.raises(ConfigError, match="no Service ops/link"):
        resolve_link_url(OperatorConfig(link_service=("ops", "link")), lambda ns, name: None)


# -- the server, end to end


class Response:
    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body).encode()


class FakeApiServer(client.ApiClient):  # type: ignore[misc]
    """The API server's answers to the link's calls, from memory (see the module's doc)."""

    def __init__(self) -> None:
        super().__init__(client.Configuration())
        self.reviews: dict[str, dict[str, Any]] = {TOKEN: review_status()}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []
        self.down = False

    def add(self, kind: str, obj: dict[str, Any]) -> None:
        self.objects[(kind, obj["metadata"]["name"])] = obj

    def call_api(
        self,
        resource_path: str,
        method: str,
        path_params: dict[str, str] | None = None,
        query_params: Any = None,
        header_params: dict[str, str] | None = None,
        body: Any = None,
        **kwargs: Any,
    ) -> Response:
        path = resource_path.format(**(path_params or {}))
        self.calls.append((method, path, dict(header_params or {}), copy.deepcopy(body)))
        if self.down:
            raise ApiException(status=503, reason="Service Unavailable")
        parts = path.strip("/").split("/")
        if path.endswith("/tokenreviews"):
            status = self.reviews.get(body["spec"]["token"], {"authenticated": False})
            return Response({"kind": "TokenReview", "status": status})
        kind = parts[-2] if parts[-1] != "status" else parts[-3]
        name = parts[-1] if parts[-1] != "status" else parts[-2]
        assert parts[parts.index("namespaces") + 1] == NS
        obj = self.objects.get((kind, name))
        if obj is None:
            raise ApiException(status=404, reason="Not Found")
        if method == "GET":
            return Response(obj)
        assert method == "PATCH"
        assert kind == "separationjobs"
        kind_of_patch = (header_params or {})["Content-Type"]
        if kind_of_patch == "application/json-patch+json":
            for op in body:
                if op["op"] == "test" and obj["metadata"].get("uid") != op["value"]:
                    raise ApiException(status=422, reason="Unprocessable Entity")
                if op["op"] == "add":
                    if "status" not in obj:
                        raise ApiException(status=422, reason="Unprocessable Entity")
                    obj["status"][op["path"].split("/")[-1]] = op["value"]
        else:
            assert kind_of_patch == "application/merge-patch+json"
            obj.setdefault("status", {}).update(body["status"])
        return Response(obj)

    def patches(self) -> list[tuple[str, Any]]:
        return [(h["Content-Type"], b) for m, _, h, b in self.calls if m == "PATCH"]


class FakeStorage(Storage):
    """Records the link's storage calls; URLs made up, uploads numbered."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse_parts = False

    def presign_get(self, bucket: str, key: str, seconds: int) -> str:
        self.calls.append(("get", bucket, key, seconds))
        return f"https://s3.test/{bucket}/{key}?X-Amz-Expires={seconds}"

    def begin_multipart(self, bucket: str, key: str, content_type: str) -> str:
        self.calls.append(("begin", bucket, key, content_type))
        return "upload-1"

    def part_url(self, bucket: str, key: str, upload_id: str, part: int, seconds: int) -> str:
        self.calls.append(("part", bucket, key, upload_id, part, seconds))
        return f"https://s3.test/{bucket}/{key}?uploadId={upload_id}&partNumber={part}"

    def complete_multipart(self, bucket: str, key: str, upload_id: str, parts: Any) -> None:
        self.calls.append(("complete", bucket, key, upload_id, tuple(parts)))
        if self.refuse_parts:
            raise PartsError("InvalidPart: One or more of the specified parts could not be found")

    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        self.calls.append(("abort", bucket, key, upload_id))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    def __init__(self) -> None:
        self.api = FakeApiServer()
        self.storage = FakeStorage()
        self.clock = Clock()
        members = [separation_job("job-1", "u-1"), separation_job("job-2", "u-2")]
        for cr in members:
            self.api.add("separationjobs", cr)
        self.api.add("separationjobs", separation_job("stranger", "u-s"))
        job = build_batch_job(members, OperatorConfig())
        job["metadata"]["uid"] = "job-uid"
        self.api.add("jobs", job)
        self.api.add(
            "pods",
            {
                "metadata": {
                    "name": POD,
                    "namespace": NS,
                    "uid": POD_UID,
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": "job-1",
                            "uid": "job-uid",
                            "controller": True,
                        }
                    ],
                }
            },
        )
        link = Link(LinkKube(self.api), self.storage, SA, self.clock)
        self.server = serve_link(0, "127.0.0.1", link)
        self.port = self.server.server_address[1]

    def cr(self, name: str) -> dict[str, Any]:
        return self.api.objects[("separationjobs", name)]

    def post(
        self,
        path: str,
        body: Any,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        method: str = "POST",
    ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        return response.status, answer


@pytest.fixture(scope="module")
def servers() -> Iterator[list[ThreadingHTTPServer]]:
    """Every test's server, stopped together at the end: each stop waits for its loop's next
    turn (half a second), which one by one would be most of this module's time."""
    started: list[ThreadingHTTPServer] = []
    yield started
    stopping = [threading.Thread(target=server.shutdown) for server in started]
    for thread in stopping:
        thread.start()
    for thread in stopping:
        thread.join()
    for server in started:
        server.server_close()


@pytest.fixture
def world(servers: list[ThreadingHTTPServer]) -> World:
    w = World()
    servers.append(w.server)
    return w


def test_no_token_or_a_bad_one_is_401(world: World) -> None:
    assert world.post(joblink.MEMBER, {"name": "job-1"}, token=None)[0] == 401
    status, answer = world.post(joblink.MEMBER, {"name": "job-1"}, token="forged")
    assert status == 401
    assert "error" in answer
    world.api.reviews["other-sa"] = review_status(account="default")
    assert world.post(joblink.MEMBER, {"name": "job-1"}, token="other-sa")[0] == 401
    world.api.reviews["old-pod"] = review_status(pod_uid="an-earlier-pod")
    assert world.post(joblink.MEMBER, {"name": "job-1"}, token="old-pod")[0] == 401
    assert world.storage.calls == []


def test_the_review_asks_for_the_link_audience(world: World) -> None:
    world.post(joblink.MEMBER, {"name": "job-1"})
    [review] = [b for m, p, _, b in world.api.calls if p.endswith("/tokenreviews")]
    assert review["spec"] == {"token": TOKEN, "audiences": [joblink.AUDIENCE]}


def test_a_name_outside_the_pods_job_is_403(world: World) -> None:
    for path in joblink.PATHS:
        status, answer = world.post(path, {"name": "stranger", "uploadId": "u", "part": 1})
        assert status == 403, path
        assert "not a SeparationJob of this pod's Job" in answer["error"]
    assert world.storage.calls == []
    assert world.api.patches() == []


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        (joblink.MEMBER, b"not json"),
        (joblink.MEMBER, b"[1, 2]"),
        (joblink.MEMBER, b"{}"),
        (joblink.MEMBER, b'{"name": ""}'),
        (joblink.PROGRESS, b'{"name": "job-1"}'),
        (joblink.PROGRESS, b'{"name": "job-1", "progress": 101}'),
        (joblink.UPLOAD_PART, b'{"name": "job-1", "uploadId": "u", "part": 0}'),
        (joblink.UPLOAD_COMPLETE, b'{"name": "job-1", "uploadId": "u", "parts": []}'),
        (
            joblink.UPLOAD_COMPLETE,
            b'{"name": "job-1", "uploadId": "u", "parts": [{"part": 2, "etag": "b"},'
            b' {"part": 1, "etag": "a"}]}',
        ),
        (joblink.UPLOAD_ABORT, b'{"name": "job-1"}'),
    ],
)
def test_malformed_requests_are_400(world: World, path: str, raw: bytes) -> None:
    status, answer = world.post(path, None, raw=raw)
    assert status == 400
    assert answer["error"]


def test_paths_methods_and_sizes(world: World) -> None:
    assert world.post(f"{joblink.PREFIX}/nothing", {"name": "job-1"})[0] == 404
    assert world.post(joblink.MEMBER, None, raw=b"", method="GET")[0] == 405
    conn = http.client.HTTPConnection("127.0.0.1", world.port, timeout=10)
    conn.putrequest("POST", joblink.MEMBER)
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(joblink.MAX_BODY + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    assert "error" in json.loads(response.read())
    conn.close()


def test_member_answers(world: World) -> None:
    status, answer = world.post(joblink.MEMBER, {"name": "job-1"})
    assert status == 200
    member = joblink.MemberAnswer.from_json(answer)
    assert (member.name, member.uid, member.run) == ("job-1", "u-1", True)
    assert member.input_url
    assert "music/in/job-1.mp3" in member.input_url
    assert world.storage.calls == [("get", "stemkube", "music/in/job-1.mp3", joblink.URL_SECONDS)]

    world.cr("job-2")["status"]["phase"] = "Completed"
    member = joblink.MemberAnswer.from_json(world.post(joblink.MEMBER, {"name": "job-2"})[1])
    assert (member.run, member.why, member.input_url) == (
        False,
        "it has already ended (phase Completed)",
        None,
    )

    world.cr("job-1")["spec"]["input"] = {"url": "https://example.com/song.mp3"}
    member = joblink.MemberAnswer.from_json(world.post(joblink.MEMBER, {"name": "job-1"})[1])
    assert (member.run, member.input_url) == (True, None)

    world.api.add("separationjobs", separation_job("job-1", "u-recreated"))
    member = joblink.MemberAnswer.from_json(world.post(joblink.MEMBER, {"name": "job-1"})[1])
    assert (member.run, member.why) == (
        False,
        "its SeparationJob is gone (another of the same name exists)",
    )


def test_progress_is_a_json_patch_tested_on_the_uid(world: World) -> None:
    report = joblink.ProgressReport("job-2", progress=40, audio_seconds=12.5)
    status, answer = world.post(joblink.PROGRESS, report.to_json())
    assert (status, answer) == (200, {"gone": False})
    [(content_type, ops)] = world.api.patches()
    assert content_type == "application/json-patch+json"
    assert ops == status_ops("u-2", joblink.report_patch(report))
    assert world.cr("job-2")["status"]["progress"] == 40


def test_progress_on_a_gone_member(world: World) -> None:
    report = joblink.ProgressReport("job-1", progress=50).to_json()
    world.api.add("separationjobs", separation_job("job-1", "u-recreated"))
    assert world.post(joblink.PROGRESS, report) == (200, {"gone": True})
    assert "progress" not in world.cr("job-1")["status"]  # the new one is untouched
    del world.api.objects[("separationjobs", "job-1")]
    assert world.post(joblink.PROGRESS, report) == (200, {"gone": True})
    world.api.add("separationjobs", separation_job("job-1", "u-1"))
    world.cr("job-1")["metadata"]["deletionTimestamp"] = "2026-11-28T10:00:00Z"
    assert world.post(joblink.PROGRESS, report) == (200, {"gone": True})


def test_progress_without_a_status_yet_merges(world: World) -> None:
    del world.cr("job-1")["status"]
    report = joblink.ProgressReport("job-1", outcome=(0, "done"))
    assert world.post(joblink.PROGRESS, report.to_json()) == (200, {"gone": False})
    assert [t for t, _ in world.api.patches()] == [
        "application/json-patch+json",
        "application/merge-patch+json",
    ]
    assert world.cr("job-1")["status"][OUTCOME_FIELD]["exitCode"] == 0


def test_an_upload_on_the_jobs_own_output(world: World) -> None:
    assert world.post(joblink.UPLOAD_BEGIN, {"name": "job-1", "key": "elsewhere"}) == (
        200,
        {"uploadId": "upload-1"},
    )
    part = joblink.PartRequest("job-1", "upload-1", 3).to_json()
    status, answer = world.post(joblink.UPLOAD_PART, part)
    assert status == 200
    assert "partNumber=3" in answer["url"]
    done = joblink.CompleteRequest("job-1", "upload-1", ((1, '"e1"'), (2, '"e2"'))).to_json()
    assert world.post(joblink.UPLOAD_COMPLETE, done) == (200, {"gone": False})
    abort = joblink.UploadRef("job-1", "upload-1").to_json()
    assert world.post(joblink.UPLOAD_ABORT, abort) == (200, {})
    key = ("stemkube", "music/out/job-1.zip")
    assert world.storage.calls == [
        ("begin", *key, "application/zip"),
        ("part", *key, "upload-1", 3, joblink.URL_SECONDS),
        ("complete", *key, "upload-1", ((1, '"e1"'), (2, '"e2"'))),
        ("abort", *key, "upload-1"),
    ]


def test_complete_of_a_gone_member_aborts(world: World) -> None:
    done = joblink.CompleteRequest("job-1", "upload-1", ((1, "e1"),)).to_json()
    world.cr("job-1")["metadata"]["deletionTimestamp"] = "2026-11-28T10:00:00Z"
    assert world.post(joblink.UPLOAD_COMPLETE, done) == (200, {"gone": True})
    assert world.storage.calls == [("abort", "stemkube", "music/out/job-1.zip", "upload-1")]
    del world.api.objects[("separationjobs", "job-1")]
    assert world.post(joblink.UPLOAD_COMPLETE, done) == (200, {"gone": True})
    assert not [c for c in world.storage.calls if c[0] == "complete"]
    assert world.post(joblink.UPLOAD_BEGIN, {"name": "job-1"})[0] == joblink.GONE_STATUS


def test_parts_refused_by_s3_are_400(world: World) -> None:
    world.storage.refuse_parts = True
    done = joblink.CompleteRequest("job-1", "upload-1", ((1, "e1"),)).to_json()
    status, answer = world.post(joblink.UPLOAD_COMPLETE, done)
    assert status == 400
    assert "InvalidPart" in answer["error"]


def test_an_api_server_outage_is_503(world: World) -> None:
    world.api.down = True
    status, answer = world.post(joblink.MEMBER, {"name": "job-1"})
    assert status == 503
    assert answer["error"]


def test_a_review_is_remembered_30_seconds(world: World) -> None:
    def reviews() -> int:
        return sum(p.endswith("/tokenreviews") for _, p, _, _ in world.api.calls)

    world.post(joblink.MEMBER, {"name": "job-1"})
    world.post(joblink.MEMBER, {"name": "job-2"})
    assert reviews() == 1
    world.clock.now += 31
    world.post(joblink.MEMBER, {"name": "job-1"})
    assert reviews() == 2


def test_no_token_in_the_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    world.post(joblink.MEMBER, {"name": "stranger"})
    world.post(joblink.MEMBER, {"name": "job-1"}, token=f"{TOKEN}-forged")
    world.api.down = True
    world.clock.now += 60
    world.post(joblink.MEMBER, {"name": "job-1"})
    assert caplog.records
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
    assert any(getattr(r, "job", None) == "stranger" for r in caplog.records)


def test_the_operator_refuses_to_start_without_the_links_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stemkube_operator import cli

    for name in (joblink.URL_ENV, LINK_SERVICE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    monkeypatch.setattr(cli, "_api_client", FakeApiServer)
    assert cli.main(["--no-leader-election"]) == 2
    err = capsys.readouterr().err
    assert joblink.URL_ENV in err
    assert LINK_SERVICE_ENV in err
