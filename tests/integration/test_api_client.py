"""The ``stemkube`` client against a live API in both modes (the ``service`` fixture), with
API keys required (``start_api(keyed=True)``: the harness's key, of tenant HARNESS_TENANT)."""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.harness.api import HARNESS_TENANT, ApiServer, mp3_song
from tests.harness.audio import sine_wav
from tests.harness.custom_model import CUSTOM_MODEL
from tests.harness.procs import free_port
from tests.harness.service import LocalService, Service
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

STEMKUBE = Path(sys.executable).parent / "stemkube"


def stemkube(
    *args: str, api: ApiServer | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed ``stemkube``; ``api``: its URL and key (if any) from the environment, as
    STEMKUBE_API_URL and STEMKUBE_API_KEY."""
    env = {k: v for k, v in os.environ.items() if k not in ("STEMKUBE_API_URL", "STEMKUBE_API_KEY")}
    if api is not None:
        env["STEMKUBE_API_URL"] = api.url
        if api.key:
            env["STEMKUBE_API_KEY"] = api.key
    return subprocess.run(
        [str(STEMKUBE), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=cwd,
        check=False,
    )


def test_stemkube_separate_and_friends(service: Service, tmp_path: Path) -> None:
    api = service.start_api(keyed=True)
    assert api.key is not None
    song = tmp_path / "song.mp3"
    song.write_bytes(mp3_song(1.0))

    result = stemkube("separate", str(song), "--poll-interval=0.3", api=api, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "song_stems.zip"
    assert result.stdout.strip() == "song_stems.zip"
    assert sorted(zipfile.ZipFile(saved).namelist()) == [
        "bass.mp3",
        "drums.mp3",
        "other.mp3",
        "vocals.mp3",
    ]
    assert "uploading song.mp3" in result.stderr
    assert "completed 100%" in result.stderr

    out = tmp_path / "karaoke.zip"
    result = stemkube(
        f"--api-url={api.url}",
        f"--api-key={api.key}",
        "separate",
        str(song),
        "--two-stems=drums",
        "--format=flac",
        f"--output={out}",
        "--poll-interval=0.3",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(zipfile.ZipFile(out).namelist()) == ["drums.flac", "no_drums.flac"]

    listed = stemkube("list", "--json", api=api)
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)
    assert [j["filename"] for j in jobs] == ["song.mp3", "song.mp3"]
    assert [j["format"] for j in jobs] == ["flac", "mp3"]
    karaoke_id = jobs[0]["job_id"]
    table = stemkube("list", "--status=completed", api=api)
    assert karaoke_id in table.stdout
    assert "completed" in table.stdout

    status = stemkube("status", karaoke_id, api=api)
    assert status.returncode == 0
    assert "completed" in status.stdout
    assert "drums, no_drums" in status.stdout

    drums = stemkube("download", karaoke_id, "--stem=drums", f"--output={tmp_path}", api=api)
    assert drums.returncode == 0, drums.stderr
    assert (tmp_path / "song_drums.flac").read_bytes()[:4] == b"fLaC"

    deleted = stemkube("delete", karaoke_id, api=api)
    assert deleted.returncode == 0
    assert karaoke_id in deleted.stdout
    gone = stemkube("status", karaoke_id, api=api)
    assert gone.returncode == 4
    assert gone.stderr == f"stemkube: job {karaoke_id} not found\n"  # said once


def test_stemkube_exit_codes(service: Service, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = stemkube(f"--api-url={nowhere}", "list")
    assert result.returncode == 3
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"stemkube: cannot reach the stemkube API at {nowhere}")

    assert stemkube("separate").returncode == 2
    missing = stemkube(f"--api-url={nowhere}", "separate", str(tmp_path / "nope.mp3"))
    assert missing.returncode == 2
    assert "no such file" in missing.stderr

    api = service.start_api(keyed=True)
    text = tmp_path / "notes.txt"
    text.write_text("not a song\n" * 50)
    refused = stemkube("separate", str(text), api=api)
    assert refused.returncode == 3
    assert "HTTP 415" in refused.stderr
    song = tmp_path / "song.mp3"
    song.write_bytes(mp3_song(0.5))
    bad = stemkube("separate", str(song), "--format=wav", "--bitrate=128", api=api)
    assert bad.returncode == 3
    assert "HTTP 422: bitrate: bitrate applies only with format mp3" in bad.stderr

    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(4000))
    failed = stemkube("-q", "separate", str(broken), "--poll-interval=0.3", api=api)
    assert failed.returncode == 1
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("stemkube: job ")
    assert " failed: " in line


def test_stemkube_separate_with_a_custom_model(service: Service, tmp_path: Path) -> None:
    """The client's flags are the catalogue's: any model the deployment serves, and the costly
    options too."""
    api = service.start_api(keyed=True)
    song = tmp_path / "song.mp3"
    song.write_bytes(mp3_song(1.0))
    result = stemkube(
        "separate",
        str(song),
        f"--model={CUSTOM_MODEL}",
        "--two-stems=accompaniment",
        "--shifts=0",
        "--poll-interval=0.3",
        api=api,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    members = sorted(zipfile.ZipFile(tmp_path / "song_stems.zip").namelist())
    assert members == ["accompaniment.mp3", "no_accompaniment.mp3"]
    status = json.loads(stemkube("list", "--json", api=api).stdout)[0]
    assert (status["model"], status["options"]["shifts"]) == (CUSTOM_MODEL, 0)


def test_stemkube_with_api_keys(service: Service, tmp_path: Path) -> None:
    """The API's refusals, as the client shows them: its words, and what to do; never a key."""
    api = service.start_api(keyed=True)
    assert api.key is not None
    admin = service.create_key("client-admin", "ops", "--role=admin")
    slow = service.create_key("client-slow", HARNESS_TENANT, "--requests-per-minute=2")
    keys = [api.key, admin, slow]

    def call(*args: str, key: str | None) -> subprocess.CompletedProcess[str]:
        done = stemkube(*args, api=api.as_key(key))
        assert not any(k in done.stdout + done.stderr for k in keys), "a key was printed"
        return done

    def refused_as_unknown(key: str) -> bool:
        return "HTTP 401" in call("list", "--json", key=key).stderr

    # Kubernetes mode: keys made after the API started reach it by its watch of the Secrets.
    wait_for(lambda: not refused_as_unknown(admin), 30, "the API knows the admin key")

    anonymous = call("list", key=None)
    assert anonymous.returncode == 3
    assert anonymous.stderr.strip() == (
        "stemkube: job list: HTTP 401: an API key is required: send it as 'Authorization: "
        "Bearer <key>' or 'X-API-Key' (give the API key with --api-key or $STEMKUBE_API_KEY)"
    )
    wrong = call("list", key=api.key[:-4] + "xxxx")
    assert wrong.returncode == 3
    assert wrong.stderr.strip() == (
        "stemkube: job list: HTTP 401: the API key is not valid (unknown, revoked or mistyped) "
        "(the key of --api-key or $STEMKUBE_API_KEY was refused)"
    )

    # A job of the harness's tenant; only admin keys filter by tenant, and see it.
    song = tmp_path / "song.mp3"
    song.write_bytes(mp3_song(0.5))
    made = call("-q", "separate", str(song), f"--output={tmp_path / 'a.zip'}", key=api.key)
    assert made.returncode == 0, made.stderr
    forbidden = call("list", f"--tenant={HARNESS_TENANT}", key=api.key)
    assert forbidden.returncode == 3
    assert forbidden.stderr.strip() == (
        "stemkube: job list: HTTP 403: only admin keys may filter by tenant"
    )
    listed = call("list", f"--tenant={HARNESS_TENANT}", key=admin)
    assert listed.returncode == 0, listed.stderr
    [head, row] = listed.stdout.splitlines()
    assert "TENANT" in head.split()
    assert HARNESS_TENANT in row.split()
    assert call("list", "--tenant=nobody", "--json", key=admin).stdout.strip() == "[]"

    # Past the key's rate limit: fixed minute windows of 2 requests, so within 5 calls one is
    # refused (after the watch brought the key: refused as unknown until then).
    wait_for(lambda: not refused_as_unknown(slow), 30, "the API knows the slow key")
    refused = next(
        (done for _ in range(5) if (done := call("list", key=slow)).returncode != 0), None
    )
    assert refused is not None, "no call was refused"
    assert refused.returncode == 3
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(
        "stemkube: job list: HTTP 429: rate limit of key 'client-slow': 2 requests per minute; "
        "the next minute starts in "
    )
    assert " s (retry after " in line
    assert line.endswith(" s)")

    service.revoke_key("client-admin")
    wait_for(lambda: refused_as_unknown(admin), 30, "the revocation reaches the API")


TITLE = "Beyoncé \u2013 Déjà Vu"  # an en dash


def percents(lines: list[str], prefix: str) -> list[int]:
    """The percentages of the progress lines that start with ``prefix``."""
    return [
        int(match.group(1))
        for line in lines
        if line.startswith(prefix) and (match := re.search(r" (\d+)%", line))
    ]


def test_stemkube_progress_in_a_log_and_a_download_into_a_new_folder(
    local_service: LocalService, tmp_path: Path
) -> None:
    """Not on a terminal (captured, as in CI), each phase says how far it is in plain lines
    whose numbers only grow: upload bytes, the job's progress, download bytes. ``-o DIR/``
    makes the folder and keeps the server's name, the exact one (filename*)."""
    api = local_service.start_api(keyed=True)
    song = tmp_path / f"{TITLE}.wav"
    song.write_bytes(sine_wav(4.0))  # 700 kB: the upload comes in a dozen reads
    out = tmp_path / "new" / "stems"
    result = stemkube(
        "separate", str(song), f"--output={out}{os.sep}", "--poll-interval=0.2", api=api
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr
    assert "\r" not in result.stderr
    saved = out / f"{TITLE}_stems.zip"
    assert result.stdout.strip() == str(saved)
    assert len(zipfile.ZipFile(saved).namelist()) == 4

    lines = result.stderr.splitlines()
    uploaded = percents(lines, f"uploading {song.name}: ")
    assert uploaded[0] == 0
    assert uploaded[-1] == 100
    assert len(uploaded) >= 5
    assert uploaded == sorted(set(uploaded)), lines
    [created] = [line for line in lines if line.endswith(" created")]
    job_id = created.split()[1]
    followed = percents(lines, f"job {job_id}: ")
    assert followed == sorted(followed), lines
    assert lines.count(f"job {job_id}: completed 100%") == 1
    downloaded = percents(lines, f"downloading {saved.name}: ")
    assert (downloaded[0], downloaded[-1]) == (0, 100)
    assert downloaded == sorted(set(downloaded)), lines

    # curl -O -J takes the plain filename: the song's name in ASCII, not "_stems.zip".
    headers = {"Authorization": f"Bearer {api.key}"}
    head = httpx.get(f"{api.url}/download/{job_id}", headers=headers, timeout=30)
    assert 'filename="Beyonce - Deja Vu_stems.zip"' in head.headers["content-disposition"]

    again = tmp_path / "again"
    for output in (f"{again}/", str(again)):  # to be made; then one that exists
        stem = stemkube("-q", "download", job_id, "--stem=vocals", f"--output={output}", api=api)
        assert stem.returncode == 0, stem.stderr
        assert stem.stdout.strip() == str(again / f"{TITLE}_vocals.mp3")
    assert sorted(p.name for p in again.iterdir()) == [f"{TITLE}_vocals.mp3"]
