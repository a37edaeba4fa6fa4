"""Live progress (``GET /jobs/{job_id}/events``, Server-Sent Events) on real jobs in both modes
(the ``service`` fixture): a job followed from its start to completed, another tenant's job,
a job deleted while followed, and the ``stemkube`` client following through the stream."""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.api import ApiServer, mp3_song
from tests.harness.audio import sine_wav
from tests.harness.service import Service
from tests.harness.waiting import wait_for
from tests.integration.test_api_client import stemkube

pytestmark = pytest.mark.integration
LONG = httpx.Timeout(120, connect=10)


def sse(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """The stream's events (comments skipped) as {"id", "event", "data"}, as they come."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def upload(http: httpx.Client, song: bytes, name: str = "song.mp3") -> str:
    response = http.post("/upload", files={"file": (name, song)})
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def follow(api: ApiServer, job_id: str) -> list[dict[str, str]]:
    with (
        api.client() as http,
        http.stream("GET", f"/jobs/{job_id}/events", timeout=LONG) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse(response.iter_lines()))  # to its end: the server closes it


def test_a_job_followed_from_its_start_to_completed(service: Service) -> None:
    api = service.start_api(keyed=True)
    with api.client() as http:
        job_id = upload(http, mp3_song(1.5))
    found = follow(api, job_id)
    assert {e["event"] for e in found} == {"status"}
    ids = [int(e["id"]) for e in found]
    assert ids == sorted(set(ids))
    statuses = [json.loads(e["data"]) for e in found]
    words = [s["status"] for s in statuses]
    order = ["pending", "processing", "completed"]
    assert words[0] in ("pending", "processing")
    assert [order.index(w) for w in words] == sorted(order.index(w) for w in words)
    assert words[-1] == "completed"
    percents = [s["progress"] for s in statuses]
    assert percents == sorted(percents)
    assert percents[-1] == 100
    assert len({json.dumps(s, sort_keys=True) for s in statuses}) == len(statuses)  # changes only
    assert statuses[-1] == api.get(f"/status/{job_id}").json()
    # A finished job: its status at once, and the stream closes.
    [again] = follow(api, job_id)
    assert json.loads(again["data"]) == statuses[-1]


def test_another_tenants_job_is_404_and_a_deleted_job_ends_the_stream(
    service: Service,
) -> None:
    api = service.start_api(keyed=True)
    theirs = api.as_key(service.create_key("globex-ci", "globex"))
    with api.client() as http:
        job_id = upload(http, sine_wav(30.0), "long.wav")
    refused = theirs.get(f"/jobs/{job_id}/events")
    assert refused.status_code == 404
    assert refused.json() == {"detail": f"job {job_id} not found"}
    assert theirs.get("/jobs/no-such-job/events").status_code == 404

    found: list[dict[str, str]] = []
    with (
        api.client() as http,
        http.stream("GET", f"/jobs/{job_id}/events", timeout=LONG) as response,
    ):
        assert response.status_code == 200
        events = sse(response.iter_lines())
        found.append(next(events))
        assert found[0]["event"] == "status"
        assert json.loads(found[0]["data"])["status"] in ("pending", "processing")
        with api.client() as other:
            assert other.delete(f"/job/{job_id}").status_code == 200
        found.extend(events)  # to the stream's end
    assert found[-1]["event"] == "deleted"
    assert json.loads(found[-1]["data"]) == {
        "job_id": job_id,
        "deleted": True,
        "detail": f"job {job_id} was deleted",
    }
    wait_for(lambda: service.job_ids() == [], 60, "the job deleted")


def requests_of(api: ApiServer, route: str) -> float:
    """GET requests of ``route`` (its template) the API answered, from its metrics."""
    total = 0.0
    for line in api.metrics().splitlines():
        found = re.match(r"stemkube_api_requests_total\{(.*)\} (\S+)$", line)
        if found and f'route="{route}"' in found.group(1) and 'method="GET"' in found.group(1):
            total += float(found.group(2))
    return total


def test_stemkube_separate_follows_the_event_stream(service: Service, tmp_path: Path) -> None:
    api = service.start_api(keyed=True)
    song = tmp_path / "song.mp3"
    song.write_bytes(mp3_song(1.0))
    result = stemkube("separate", str(song), "-o", str(tmp_path / "out.zip"), api=api)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.zip").stat().st_size > 0
    assert "completed 100%" in result.stderr
    assert requests_of(api, "/jobs/{job_id}/events") == 1
    assert requests_of(api, "/status/{job_id}") == 0  # no polling
    # --poll: the old way.
    result = stemkube("separate", str(song), "--poll", "-o", str(tmp_path / "b.zip"), api=api)
    assert result.returncode == 0, result.stderr
    assert requests_of(api, "/jobs/{job_id}/events") == 1
    assert requests_of(api, "/status/{job_id}") >= 1
