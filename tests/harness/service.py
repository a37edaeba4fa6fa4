"""One REST API test suite, two backends. A test that takes the ``service`` fixture runs twice:
against Kubernetes mode (the tier's control plane, MinIO and operator, with the separator run
by the pod runner) and against local mode (``stemkube-api --local``: SQLite, files, worker
processes). Each mode answers the same questions about what it holds, so one test body checks
both: which objects are stored, which jobs exist, whether a job's separator still runs. Each
makes API keys as an operator of that mode does (``stemkube-api keys``), and a keyed API
(``start_api(keyed=True)``) sends the harness's own."""

import contextlib
import os
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from kubernetes import client

from stemkube_api.jobs import PROCESSING
from stemkube_contract.batch import SERVE_FLAG
from stemkube_contract.resource import GROUP, PLURAL, VERSION
from stemkube_contract.usage import USAGE_PREFIX
from tests.harness.api import (
    HARNESS_KEY_NAME,
    HARNESS_TENANT,
    ApiFactory,
    ApiServer,
    create_key,
    launch_api,
    revoke_key,
)
from tests.harness.fixtures import Cluster
from tests.harness.minio import MinioServer
from tests.harness.stemkube import OperatorFactory
from tests.harness.urlserver import ALLOW_LOOPBACK
from tests.harness.webhook_receiver import WEBHOOK_ENV

BACKENDS = ("kubernetes", "local")


class Service(Protocol):
    kind: str

    def start_api(self, wait_ready: bool = True, keyed: bool = False, **env: str) -> ApiServer:
        """The API (and what runs its jobs); keyword arguments are environment variables.
        ``keyed``: keys required, and the server sends the harness's key (tenant
        ``HARNESS_TENANT``); else none (Kubernetes mode: STEMKUBE_AUTH=off; local mode: open
        on loopback while it has no key)."""
        ...

    def create_key(self, name: str, tenant: str, *flags: str) -> str:
        """A new key from ``stemkube-api keys create`` (``flags``: --role admin...)."""
        ...

    def revoke_key(self, name_or_id: str) -> None: ...

    def objects(self) -> list[str]:
        """Keys of the stored objects (whole ones; not the audio quota's ledger entries)."""
        ...

    def incomplete_uploads(self) -> list[str]:
        """Keys of objects begun and not finished (multipart uploads, partial files)."""
        ...

    def object_head(self, key: str, length: int) -> tuple[int, bytes]:
        """A stored object's size and its first ``length`` bytes."""
        ...

    def begin_upload(self, key: str) -> Callable[[], None]:
        """Begins an incomplete upload (a control for ``incomplete_uploads``); returns its
        abort."""
        ...

    def job_ids(self) -> list[str]:
        """Jobs the backend holds: SeparationJob names, or SQLite rows."""
        ...

    def separating(self, job_id: str) -> bool:
        """A separator runs for the job: a pod, or a local process."""
        ...


class KubernetesService:
    kind = "kubernetes"

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        minio: MinioServer,
        bucket: str,
        start_api: ApiFactory,
        start_operator: OperatorFactory,
    ) -> None:
        self.cluster, self.namespace, self.bucket = cluster, namespace, bucket
        self.s3 = minio.client()
        self._start_api, self._start_operator = start_api, start_operator
        self._operator_started = False

    def start_api(self, wait_ready: bool = True, keyed: bool = False, **env: str) -> ApiServer:
        if not self._operator_started:
            self._start_operator()
            self._operator_started = True
        return self._start_api(wait_ready=wait_ready, keyed=keyed, **env)

    @property
    def _keys_where(self) -> tuple[list[str], dict[str, str]]:
        return [f"--namespace={self.namespace}"], {"KUBECONFIG": str(self.cluster.kubeconfig)}

    def create_key(self, name: str, tenant: str, *flags: str) -> str:
        return create_key(*self._keys_where, name, tenant, *flags)

    def revoke_key(self, name_or_id: str) -> None:
        revoke_key(*self._keys_where, name_or_id)

    def objects(self) -> list[str]:
        """The jobs' objects: the bucket but the audio quota's ledger (its own test reads it)."""
        return sorted(
            str(o.object_name)
            for o in self.s3.list_objects(self.bucket, recursive=True)
            if not str(o.object_name).startswith(USAGE_PREFIX)
        )

    def incomplete_uploads(self) -> list[str]:
        result = self.s3._list_multipart_uploads(self.bucket)
        return sorted(upload.object_name for upload in result.uploads)

    def object_head(self, key: str, length: int) -> tuple[int, bytes]:
        size = self.s3.stat_object(self.bucket, key).size
        response = self.s3.get_object(self.bucket, key, 0, length)
        try:
            return int(size or 0), response.read()
        finally:
            response.close()
            response.release_conn()

    def begin_upload(self, key: str) -> Callable[[], None]:
        upload_id = self.s3._create_multipart_upload(self.bucket, key, {})
        return lambda: self.s3._abort_multipart_upload(self.bucket, key, upload_id)

    def job_ids(self) -> list[str]:
        listed = client.CustomObjectsApi(self.cluster.api).list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL
        )
        return sorted(item["metadata"]["name"] for item in listed["items"])

    def separating(self, job_id: str) -> bool:
        pods = client.CoreV1Api(self.cluster.api).list_namespaced_pod(
            self.namespace, label_selector=f"stemkube.io/separation-job={job_id}"
        )
        return bool(pods.items)


def pids_naming(text: str) -> list[int]:
    """Processes with ``text`` in an argument of their command line."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(needle in arg for arg in (entry / "cmdline").read_bytes().split(b"\0")):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class LocalService:
    kind = "local"

    def __init__(self, model_repo: Path, root: Path) -> None:
        self.model_repo = model_repo
        self.data_dir = root / "data"
        self.log_dir = root / "logs"
        self.started: list[ApiServer] = []
        self.harness_key: str | None = None

    def start_api(self, wait_ready: bool = True, keyed: bool = False, **env: str) -> ApiServer:
        key = None
        if keyed:
            if self.harness_key is None:
                self.harness_key = self.create_key(HARNESS_KEY_NAME, HARNESS_TENANT)
            key = self.harness_key
        return self.start_local(wait_ready, (), True, key=key, **env)

    @property
    def _keys_where(self) -> tuple[list[str], dict[str, str]]:
        return ["--local", f"--data-dir={self.data_dir}"], {}

    def create_key(self, name: str, tenant: str, *flags: str) -> str:
        return create_key(*self._keys_where, name, tenant, *flags)

    def revoke_key(self, name_or_id: str) -> None:
        revoke_key(*self._keys_where, name_or_id)

    def start_local(
        self,
        wait_ready: bool = True,
        args: tuple[str, ...] = (),
        with_model_repo: bool = True,
        key: str | None = None,
        **env: str,
    ) -> ApiServer:
        """``stemkube-api --local`` on this service's data folder and (unless not
        ``with_model_repo``) the tiny models; ``args`` are more flags; the server sends
        ``key``."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("STEMKUBE_")}
        # Test only: URL jobs may fetch from the tier's loopback server (urlserver); the API
        # hands its environment to its workers.
        full_env.update(ALLOW_LOOPBACK)
        full_env.update(WEBHOOK_ENV)  # webhooks: the test secret, retries a second apart
        full_env.update(env)
        server = launch_api(
            f"api-local-{len(self.started)}",
            full_env,
            self.log_dir,
            wait_ready=wait_ready,
            args=(
                "--local",
                f"--data-dir={self.data_dir}",
                *([f"--model-repo={self.model_repo}"] if with_model_repo else []),
                *args,
            ),
            key=key,
        )
        self.started.append(server)
        return server

    def stop(self) -> None:
        for server in self.started:
            server.stop()
        # Separators orphaned by a test that killed its API hard: the API would have killed
        # them on its next start, but there is none.
        for pid in pids_naming(str(self.data_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _files(self) -> list[str]:
        root = self.data_dir / "objects"
        if not root.is_dir():
            return []
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def objects(self) -> list[str]:
        return [k for k in self._files() if not k.rsplit("/", 1)[-1].startswith(".")]

    def incomplete_uploads(self) -> list[str]:
        return [k for k in self._files() if k.rsplit("/", 1)[-1].startswith(".")]

    def object_head(self, key: str, length: int) -> tuple[int, bytes]:
        path = self.data_dir / "objects" / key
        with path.open("rb") as file:
            return path.stat().st_size, file.read(length)

    def begin_upload(self, key: str) -> Callable[[], None]:
        path = self.data_dir / "objects" / key
        partial = path.with_name(f".{path.name}.control.part")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"partial")
        return lambda: partial.unlink()

    def job_ids(self) -> list[str]:
        return sorted(row["job_id"] for row in self.rows())

    def rows(self, where: str = "", *params: object) -> list[dict[str, Any]]:
        """The job table as SQLite holds it (``where``: an SQL condition on its rows)."""
        database = self.data_dir / "jobs.sqlite3"
        if not database.exists():
            return []
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            db.row_factory = sqlite3.Row
            query = "SELECT * FROM jobs" + (f" WHERE {where}" if where else "")
            return [dict(row) for row in db.execute(query, params)]
        finally:
            db.close()

    def separator_pids(self, job_id: str) -> list[int]:
        """The job's separator, as local mode records it: the pid of the job's row while it is
        ``processing`` (a worker runs many jobs, and its command line names none of them),
        only while that process lives and is a separator (``--serve``, or a single run's
        ``--job-id``), not whatever the pid was reused for. It outlives a killed API: the row
        still names it."""
        running = self.rows("job_id = ? AND status = ?", job_id, PROCESSING)
        pids = [int(row["pid"]) for row in running if row["pid"] is not None]
        return [pid for pid in pids if _is_separator(pid, job_id)]

    def separating(self, job_id: str) -> bool:
        return bool(self.separator_pids(job_id))


def _is_separator(pid: int, job_id: str) -> bool:
    """Whether the process lives and is a separator (a zombie's command line is empty)."""
    try:
        args = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return SERVE_FLAG.encode() in args or f"--job-id={job_id}".encode() in args


@pytest.fixture
def local_service(model_repo: Path, tmp_path: Path) -> Iterator[LocalService]:
    service = LocalService(model_repo, tmp_path / "local")
    yield service
    service.stop()


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest) -> Iterator[Service]:
    """The REST API's backend under test: Kubernetes mode, then local mode."""
    if request.param == "local":
        yield request.getfixturevalue("local_service")
        return
    yield KubernetesService(
        request.getfixturevalue("cluster"),
        request.getfixturevalue("stemkube_namespace"),
        request.getfixturevalue("minio_server"),
        request.getfixturevalue("bucket"),
        request.getfixturevalue("start_api"),
        request.getfixturevalue("start_operator"),
    )
