"""Request batches (``POST /batches``) in both modes (the ``service`` fixture), with API keys:
the ``stemkube`` client sends a folder of two songs as one batch and follows it to the end;
another tenant finds no such batch; a refused song (not audio, past the key's quota) refuses
the batch and stores nothing; an Idempotency-Key replays a batch and makes nothing more; and
``DELETE /batches/{id}`` cancels the jobs that have not finished and keeps the finished ones.
Kubernetes mode: each SeparationJob carries the batch's label."""

import re
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from stemkube_contract.resource import BATCH_LABEL, GROUP, PLURAL, VERSION
from tests.harness.api import HARNESS_TENANT, ApiServer, mp3_song
from tests.harness.service import KubernetesService, Service
from tests.harness.urlserver import UrlServer
from tests.harness.waiting import wait_for
from tests.integration.test_api_client import stemkube
from tests.integration.test_api_direct_upload import begin, put_parts

pytestmark = pytest.mark.integration

SONG = mp3_song(1.0)
OTHER = mp3_song(1.2)


def post_songs(
    api: ApiServer, songs: list[tuple[str, bytes]], key: str | None = None, **fields: str
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    with api.client() as http:
        return http.post(
            "/batches",
            files=[("file", (name, data, "application/octet-stream")) for name, data in songs],
            data=fields,
            headers=headers,
        )


def batch_labels(service: KubernetesService) -> dict[str, str | None]:
    listed: dict[str, Any] = client.CustomObjectsApi(
        service.cluster.api
    ).list_namespaced_custom_object(GROUP, VERSION, service.namespace, PLURAL)
    return {
        item["metadata"]["name"]: (item["metadata"].get("labels") or {}).get(BATCH_LABEL)
        for item in listed["items"]
    }


def test_the_client_sends_a_folder_as_one_batch(service: Service, tmp_path: Path) -> None:
    api = service.start_api(keyed=True)
    folder = tmp_path / "album"
    folder.mkdir()
    (folder / "b-side.mp3").write_bytes(OTHER)
    (folder / "a-side.mp3").write_bytes(SONG)
    (folder / "notes.txt").write_text("not a song: a folder gives its audio files only\n")
    out = tmp_path / "stems"

    result = stemkube(
        "separate", str(folder), f"--output={out}/", "--poll-interval=0.3", api=api, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    saved = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in saved] == ["a-side_stems.zip", "b-side_stems.zip"]
    for path in saved:
        assert sorted(zipfile.ZipFile(path).namelist()) == [
            "bass.mp3",
            "drums.mp3",
            "other.mp3",
            "vocals.mp3",
        ]
    # One progress line per song, each to its end (stderr is no terminal here).
    assert "a-side.mp3: completed 100%" in result.stderr
    assert "b-side.mp3: completed 100%" in result.stderr
    found = re.search(r"batch ([0-9a-f-]{36}) created: 2 jobs", result.stderr)
    assert found is not None, result.stderr
    batch_id = found.group(1)

    batch = api.get(f"/batches/{batch_id}").json()
    assert (batch["status"], batch["progress"]) == ("completed", 100)
    assert batch["counts"] == {"pending": 0, "processing": 0, "completed": 2, "failed": 0}
    assert [job["filename"] for job in batch["jobs"]] == ["a-side.mp3", "b-side.mp3"]
    assert sorted(j["job_id"] for j in batch["jobs"]) == service.job_ids()
    if isinstance(service, KubernetesService):
        assert set(batch_labels(service).values()) == {batch_id}

    # Another tenant's key: no such batch, for reading and for deleting.
    theirs = api.as_key(service.create_key("globex-ci", "globex"))
    for method in ("GET", "DELETE"):
        with theirs.client() as http:
            answer = http.request(method, f"/batches/{batch_id}")
        assert answer.status_code == 404, answer.text
        assert answer.json()["detail"] == f"batch {batch_id} not found"
    assert len(service.job_ids()) == 2
    assert HARNESS_TENANT != "globex"


def test_a_refused_song_leaves_nothing_and_a_key_replays_its_batch(service: Service) -> None:
    api = service.start_api(keyed=True)
    text = b"these are lyrics, not a song\n" * 200

    refused = post_songs(api, [("a.mp3", SONG), ("lyrics.txt", text)])
    assert refused.status_code == 415, refused.text
    assert refused.json()["detail"].startswith("song 2 ('lyrics.txt'): not an audio file")
    # The key's quota counts every song of the batch: one job at a time, two songs.
    single = api.as_key(service.create_key("one-at-a-time", HARNESS_TENANT, "--max-active-jobs=1"))
    over = post_songs(single, [("a.mp3", SONG), ("b.mp3", OTHER)])
    assert over.status_code == 429, over.text
    assert over.json()["detail"].startswith("song 2 ('b.mp3'): ")
    assert service.job_ids() == []
    assert service.objects() == []
    assert service.incomplete_uploads() == []

    first = post_songs(api, [("a.mp3", SONG), ("b.mp3", OTHER)], key="album-1", format="wav")
    assert first.status_code == 200, first.text
    made = service.job_ids()
    stored = service.objects()
    assert sorted(job["job_id"] for job in first.json()["jobs"]) == made
    again = post_songs(api, [("a.mp3", SONG), ("b.mp3", OTHER)], key="album-1", format="wav")
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = post_songs(api, [("a.mp3", SONG)], key="album-1", format="wav")
    assert other.status_code == 409, other.text
    assert service.job_ids() == made
    assert [k for k in service.objects() if k not in stored and "/inputs/" in f"/{k}"] == []

    # Deleted at once: nothing had finished, so every job is cancelled.
    batch_id = first.json()["batch_id"]
    with api.client() as http:
        deleted = http.delete(f"/batches/{batch_id}").json()
        assert sorted(deleted["cancelled"]) == made
        assert deleted["kept"] == []
        assert http.get(f"/batches/{batch_id}").status_code == 404
        assert http.delete(f"/batches/{batch_id}").status_code == 404
    wait_for(lambda: service.job_ids() == [], 30, "the batch's jobs gone")

    # A direct upload joins a JSON batch once completed without its job; a batch refused for
    # another song leaves it as it was, ready for the next.
    upload = begin(api, "live.mp3", len(SONG))
    upload_id = upload["upload_id"]
    with api.client() as http:
        ready = http.post(
            f"/uploads/{upload_id}/complete",
            json={"parts": put_parts(upload, SONG), "create_job": False},
        )
        assert ready.status_code == 200, ready.text
        assert ready.json()["size"] == len(SONG)
        assert service.job_ids() == []
        mixed = [{"upload_id": upload_id}, {"url": "ftp://example.com/b.mp3"}]
        bad = http.post("/batches", json={"sources": mixed})
        assert bad.status_code == 422, bad.text
        assert bad.json()["detail"].startswith("song 2 (sources[1]).url: ")
        assert service.job_ids() == []
        assert f"uploads/{upload_id}.json" in service.objects()
        joined = http.post("/batches", json={"sources": [{"upload_id": upload_id}]})
        assert joined.status_code == 200, joined.text
        assert [j["job_id"] for j in joined.json()["jobs"]] == [upload_id]
        assert service.job_ids() == [upload_id]
        assert f"uploads/{upload_id}.json" not in service.objects()  # the job owns its input
        gone = http.delete(f"/batches/{joined.json()['batch_id']}").json()
        assert gone["cancelled"] + gone["kept"] == [upload_id]
    wait_for(lambda: service.job_ids() == [], 30, "the upload's job gone")


def test_deleting_a_batch_cancels_what_has_not_finished(
    service: Service, url_server: UrlServer
) -> None:
    api = service.start_api(keyed=True)
    # The first fails at once (HTTP 404); the second's body stops coming, and is retried.
    sources = [{"url": url_server.url("/missing")}, {"url": url_server.url("/slow")}]
    with api.client() as http:
        created = http.post("/batches", json={"sources": sources})
        assert created.status_code == 200, created.text
        batch_id = created.json()["batch_id"]
        failed, slow = (job["job_id"] for job in created.json()["jobs"])

        def first_failed() -> dict[str, Any] | None:
            batch: dict[str, Any] = http.get(f"/batches/{batch_id}").json()
            return batch if batch["counts"]["failed"] == 1 else None

        batch = wait_for(first_failed, 60, "the batch's first job failed", interval=0.3)
        assert batch["status"] == "processing"
        assert [j["job_id"] for j in batch["jobs"] if j["status"] == "failed"] == [failed]

        deleted = http.delete(f"/batches/{batch_id}").json()
        assert deleted["cancelled"] == [slow]
        assert deleted["kept"] == [failed]
        left = http.get(f"/batches/{batch_id}").json()
        assert [j["job_id"] for j in left["jobs"]] == [failed]
        assert (left["status"], left["progress"]) == ("failed", 100)
        wait_for(lambda: service.job_ids() == [failed], 30, "the cancelled job gone")
        wait_for(lambda: not service.separating(slow), 60, "its separator stopped")
