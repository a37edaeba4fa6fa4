"""The web page (/ui/) in a real browser against a real local-mode service with the tiny model:
Debian's headless Chromium driven by Playwright, no mocked API. A song uploaded through the
page, its job followed to 100 %, its stems decoded, drawn and played in sync with mute, solo
and volume (read back from the page's Web Audio gain nodes), the ZIP, one stem and the mix
downloaded, the job deleted, a non-audio file refused with the API's message, axe-core's
accessibility rules, and a service that requires a key. Screenshots of the main states go to
``.cache/ui-screenshots`` (copies of some are committed under ``api/docs/``)."""

import json
import wave
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# No skip: a missing Chromium or Playwright fails these tests (.ci/run installs Debian's
# chromium, requirements-dev.txt pins playwright), so CI never passes them unrun.
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    FilePayload,
    Page,
    expect,
    sync_playwright,
)

from stemkube_api.web import API_CSP, UI_CSP
from tests.harness.api import ApiFactory, ApiServer, mp3_song
from tests.harness.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    axe_script,
    chromium_missing,
)
from tests.harness.service import LocalService
from tests.harness.stemkube import OperatorFactory

pytestmark = pytest.mark.integration

FOUR = ["vocals", "drums", "bass", "other"]
NO_JOBS = "No jobs yet. Upload a song above to start one."
JOB_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    missing = chromium_missing()
    if missing is not None:
        pytest.fail(f"{missing}: the browser tests need it (.ci/run installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Console:
    """The page's console errors and uncaught exceptions (a CSP violation is one)."""

    def __init__(self, page: "Page") -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _message(self, message: "ConsoleMessage") -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url', '')})")

    def unexpected(self, *allowed: str) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in allowed)]


@pytest.fixture
def page(browser: "Browser") -> Iterator["Page"]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: "Page", name: str, selector: str | None = None) -> Path:
    """The whole page, what the window shows (``viewport``) or one element, under
    ``.cache/ui-screenshots/``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if selector in (None, "viewport"):
        page.screenshot(path=str(path), full_page=selector is None)
    else:
        page.locator(selector).screenshot(path=str(path))
    return path


def api_detail(response: httpx.Response) -> str:
    detail: str = response.json()["detail"]
    return detail


# Pixels of a stem's waveform (the page's --wave blue), apart from the playhead (orange), and the
# rows they span: a drawn waveform, not an empty canvas or a flat line.
WAVE_PIXELS = """
(canvas) => {
  const g = canvas.getContext("2d");
  const { data } = g.getImageData(0, 0, canvas.width, canvas.height);
  let pixels = 0;
  const rows = new Set();
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 0 && data[i + 2] > data[i]) {
      pixels += 1;
      rows.add(Math.floor(i / 4 / canvas.width));
    }
  }
  return { pixels, rows: rows.size, width: canvas.width, height: canvas.height };
}
"""

AXE_RUN = """
async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5),
  }));
}
"""


def serious_violations(page: "Page") -> list[dict[str, Any]]:
    # Not add_script_tag: the page's CSP refuses inline scripts, as it should. Evaluated
    # through the DevTools protocol, axe-core is not the page's script.
    page.evaluate(axe_script().read_text() + "\n;true")
    violations: list[dict[str, Any]] = page.evaluate(AXE_RUN)
    return [v for v in violations if v["impact"] in ("serious", "critical")]


def choose_file(page: "Page", name: str, mime: str, data: bytes) -> None:
    """As if picked in the page's file dialog."""
    payload = FilePayload(name=name, mimeType=mime, buffer=data)
    page.locator("#file-input").set_input_files(files=payload)


def open_page(page: "Page", api: ApiServer) -> None:
    page.goto(f"{api.url}/ui/")
    expect(page.locator("#jobs-state")).not_to_have_text("Loading jobs…")


def test_the_page_is_served_open_with_its_own_csp(local_service: LocalService) -> None:
    api = local_service.start_api(keyed=True)
    with httpx.Client(base_url=api.url, timeout=30) as http:  # no key: the page is open
        page = http.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == UI_CSP
        assert '<script type="module" src=' in page.text
        assert "<script>" not in page.text  # no inline script
        assert http.get("/ui", follow_redirects=False).headers["location"] == "ui/"
        script = http.get("/ui/js/main.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert http.get("/ui/style.css").headers["content-type"].startswith("text/css")
        missing = http.get("/ui/../app.py")
        assert missing.status_code == 404
        assert http.get("/ui/nothing.js").json() == {"detail": "no such file: /ui/nothing.js"}
        config = http.get("/ui/config.json").json()
        assert config == {"max_file_size": 500 * 1024**2, "max_file_size_text": "500MB"}
        # The JSON answers keep the API's CSP, and the data stays guarded.
        root = http.get("/")
        assert root.json()["service"] == "stemkube"
        assert root.headers["content-security-policy"] == API_CSP
        assert http.get("/jobs").status_code == 401
        assert "/ui" not in http.get("/openapi.json").json()["paths"]


def test_a_song_through_the_page(local_service: LocalService, page: "Page") -> None:
    api = local_service.start_api(MAX_FILE_SIZE="20MB")
    console = Console(page)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    open_page(page, api)
    expect(page.locator("#jobs-state")).to_have_text(NO_JOBS)
    expect(page.locator("#size-limit")).to_have_text("Size limit: 20MB per file.")
    expect(page.locator("#model")).to_have_value("htdemucs")
    screenshot(page, "1-empty")

    # Upload: progress per file, then the job in the list, followed live to 100 %.
    choose_file(page, "song.mp3", "audio/mpeg", mp3_song(3.0))
    upload = page.locator('#uploads li[data-file="song.mp3"]')
    expect(upload).to_have_attribute("data-state", "done")
    expect(upload.locator("progress")).to_have_js_property("value", 100)
    job = page.locator("#jobs li.job")
    expect(job).to_have_count(1)
    expect(job.locator(".name")).to_have_text("song.mp3")
    seen = set()
    for _ in range(JOB_TIMEOUT_MS // 100):
        status = job.get_attribute("data-status")
        seen.add(status)
        if status in ("completed", "failed"):
            break
        page.wait_for_timeout(100)
    assert job.get_attribute("data-status") == "completed", job.inner_text()
    assert seen & {"pending", "processing"}, seen  # it was seen moving, not only done
    # Followed by its event stream, not by polling the list every second.
    job_id = job.get_attribute("data-job-id")
    assert any(url.endswith(f"/jobs/{job_id}/events") for url in requests), requests
    assert sum("/jobs?" in url for url in requests) < 10, requests
    expect(job.locator("progress")).to_have_js_property("value", 100)
    assert job.get_attribute("data-progress") == "100"
    expect(job.locator(".badge")).to_have_text("Completed")
    screenshot(page, "2-jobs")
    screenshot(page, "2-jobs-list", 'section[aria-labelledby="jobs-title"]')

    # The player: four stems decoded and drawn on one timeline.
    job.get_by_role("button", name="Open player: song.mp3").click()
    player = page.locator("#player")
    expect(player).to_have_attribute("data-state", "ready", timeout=60_000)
    stems = page.locator("#stems li")
    expect(stems).to_have_count(4)
    state = page.evaluate("window.stemkube.player.state()")
    assert sorted(state["stems"]) == sorted(FOUR)
    assert 2.5 < state["duration"] < 3.5
    for name in FOUR:
        drawn = page.locator(f'#stems li[data-stem="{name}"] canvas').evaluate(WAVE_PIXELS)
        assert drawn["width"] > 100, drawn
        assert drawn["pixels"] > drawn["width"], (name, drawn)  # more than a line
        assert drawn["rows"] > 4, (name, drawn)

    # Mute and solo change the gains; volume scales one stem.
    def gains() -> dict[str, float]:
        found: dict[str, float] = page.evaluate("window.stemkube.player.gains()")
        return found

    def stem_button(stem: str, word: str) -> Any:
        return page.get_by_role("button", name=f"{word} {stem}", exact=True)

    assert gains() == dict.fromkeys(FOUR, 1)
    stem_button("vocals", "Mute").click()
    assert gains() == {"vocals": 0, "drums": 1, "bass": 1, "other": 1}
    expect(stem_button("vocals", "Mute")).to_have_attribute("aria-pressed", "true")
    stem_button("drums", "Solo").click()
    assert gains() == {"vocals": 0, "drums": 1, "bass": 0, "other": 0}
    stem_button("vocals", "Solo").click()  # soloed but muted: muted wins
    assert gains() == {"vocals": 0, "drums": 1, "bass": 0, "other": 0}
    stem_button("vocals", "Mute").click()
    assert gains() == {"vocals": 1, "drums": 1, "bass": 0, "other": 0}
    stem_button("vocals", "Solo").click()
    stem_button("drums", "Solo").click()
    assert gains() == dict.fromkeys(FOUR, 1)
    page.get_by_label("Volume", exact=False).nth(2).fill("0.5")  # bass
    assert gains() == {"vocals": 1, "drums": 1, "bass": 0.5, "other": 1}

    # Play: every stem runs on one clock; pause holds the position; seek moves it.
    page.locator("#play").click()
    page.wait_for_function("() => window.stemkube.player.state().position > 0.3", timeout=20_000)
    assert page.evaluate("window.stemkube.player.state().playing") is True
    expect(page.locator("#play")).to_have_attribute("aria-pressed", "true")
    page.locator("#play").click()
    paused = page.evaluate("window.stemkube.player.state()")
    assert paused["playing"] is False
    assert paused["position"] > 0.3
    page.wait_for_timeout(300)
    assert page.evaluate("window.stemkube.player.state().position") == paused["position"]
    page.locator("#seek").fill("2")
    assert page.evaluate("window.stemkube.player.state().position") == 2
    screenshot(page, "3-player")
    screenshot(page, "3-player-section", "#player")

    # Downloads, each fetched with the page's key header and saved from a blob.
    with page.expect_download() as zip_download:
        page.locator("#dl-zip").click()
    assert zip_download.value.suggested_filename == "song_stems.zip"
    with zipfile.ZipFile(zip_download.value.path()) as archive:
        assert sorted(archive.namelist()) == sorted(f"{s}.mp3" for s in FOUR)
    with page.expect_download() as stem_download:
        page.get_by_role("button", name="Download vocals", exact=True).click()
    assert stem_download.value.suggested_filename == "song_vocals.mp3"
    head = Path(stem_download.value.path()).read_bytes()[:3]
    assert head == b"ID3" or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"), head
    with page.expect_download() as mix_download:
        page.locator("#dl-mix").click()
    assert mix_download.value.suggested_filename == "song_mix.wav"
    with wave.open(str(mix_download.value.path())) as mix:
        assert mix.getsampwidth() == 2
        assert mix.getnchannels() == 2
        assert 2.5 < mix.getnframes() / mix.getframerate() < 3.5
    with page.expect_download() as list_download:
        job.get_by_role("button", name="Download ZIP: song.mp3").click()
    assert list_download.value.suggested_filename == "song_stems.zip"

    # Accessibility: axe-core's rules on the page with the player open.
    assert serious_violations(page) == []

    # A phone's width: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(200)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "4-phone")
    page.set_viewport_size({"width": 1100, "height": 900})

    # Refused: a file that is not audio, with the API's own message.
    text = b"just some notes, not a song\n"
    with httpx.Client(base_url=api.url, timeout=30) as http:
        expected = api_detail(http.post("/upload", files={"file": ("notes.txt", text)}))
    choose_file(page, "notes.txt", "text/plain", text)
    refused = page.locator('#uploads li[data-file="notes.txt"]')
    expect(refused).to_have_attribute("data-state", "refused")
    expect(refused.locator(".meta")).to_have_text(f"Refused: {expected}")
    # Too large for the limit shown: refused before a byte is sent.
    choose_file(page, "big.wav", "audio/wav", b"\0" * (21 * 1024**2))
    big = page.locator('#uploads li[data-file="big.wav"]')
    expect(big).to_have_attribute("data-state", "refused")
    expect(big.locator(".meta")).to_have_text("Refused: the file is 21 MiB; the limit is 20MB")
    screenshot(page, "5-refused")

    # Delete: two presses, then the job is gone from the page and the service.
    page.locator("#player-close").click()
    job.get_by_role("button", name="Delete: song.mp3").click()
    job.get_by_role("button", name="Really delete? song.mp3").click()
    expect(page.locator("#jobs li.job")).to_have_count(0)
    expect(page.locator("#jobs-state")).to_have_text(NO_JOBS)
    assert local_service.job_ids() == []

    # 415 from the refused upload is the one console line a browser writes on its own.
    assert console.unexpected("status of 415") == []


def test_paging_through_jobs(local_service: LocalService, page: "Page") -> None:
    api = local_service.start_api()
    with httpx.Client(base_url=api.url, timeout=30) as http:
        for i in range(12):
            files = {"file": (f"song{i:02d}.mp3", mp3_song(0.5))}
            assert http.post("/upload", files=files, data={"format": "wav"}).status_code == 200
    open_page(page, api)
    names = page.locator("#jobs li.job .name")
    expect(names).to_have_count(10)
    expect(names.first).to_have_text("song11.mp3")  # newest first
    expect(page.locator("#jobs-newer")).to_be_disabled()
    page.locator("#jobs-older").click()
    expect(names).to_have_count(2)
    expect(names.last).to_have_text("song00.mp3")
    expect(page.locator("#jobs-older")).to_be_disabled()
    page.locator("#jobs-newer").click()
    expect(names).to_have_count(10)
    expect(names.first).to_have_text("song11.mp3")


def test_a_service_that_requires_a_key(local_service: LocalService, page: "Page") -> None:
    api = local_service.start_api(keyed=True)
    assert api.key is not None
    with httpx.Client(base_url=api.url, timeout=30) as http:
        expected = api_detail(http.get("/jobs"))
    console = Console(page)
    open_page(page, api)
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(expected)
    expect(page.locator("#jobs-state")).to_have_text(f"Jobs could not be listed: {expected}")
    expect(page.locator("#key-box")).to_have_attribute("open", "")
    screenshot(page, "6-key-needed")
    page.set_viewport_size({"width": 390, "height": 700})
    screenshot(page, "6-key-needed-phone", "viewport")
    page.set_viewport_size({"width": 1100, "height": 900})
    assert serious_violations(page) == []

    page.get_by_label("Key (sent as").fill(api.key)
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#jobs-state")).to_have_text(NO_JOBS)
    expect(banner).to_be_hidden()
    expect(page.locator("#model")).to_be_enabled()
    expect(page.locator("#key-state")).to_have_text("saved in this browser")

    # The key is kept: a new load of the page lists at once, and uploads with it.
    open_page(page, api)
    expect(page.locator("#jobs-state")).to_have_text(NO_JOBS)
    choose_file(page, "keyed.mp3", "audio/mpeg", mp3_song(0.5))
    expect(page.locator('#uploads li[data-file="keyed.mp3"]')).to_have_attribute(
        "data-state", "done"
    )
    expect(page.locator("#jobs li.job .name")).to_have_text("keyed.mp3")
    assert console.unexpected("status of 401") == []


def test_the_page_in_kubernetes_mode(
    start_operator: OperatorFactory, start_api: ApiFactory, page: "Page"
) -> None:
    """The same page on the API of Kubernetes mode (SeparationJobs, the operator, MinIO), as
    the chart serves it: a song through it to its four stems, followed by its event stream."""
    start_operator()
    api = start_api(keyed=True)
    assert api.key is not None
    page.add_init_script(f"localStorage.setItem('stemkube.apiKey', {json.dumps(api.key)})")
    console = Console(page)
    open_page(page, api)
    expect(page.locator("#jobs-state")).to_have_text(NO_JOBS)
    choose_file(page, "cluster.mp3", "audio/mpeg", mp3_song(2.0))
    job = page.locator("#jobs li.job")
    expect(job).to_have_count(1)
    expect(job).to_have_attribute("data-status", "completed", timeout=JOB_TIMEOUT_MS)
    job.get_by_role("button", name="Open player: cluster.mp3").click()
    expect(page.locator("#player")).to_have_attribute("data-state", "ready", timeout=60_000)
    assert sorted(page.evaluate("window.stemkube.player.state()")["stems"]) == sorted(FOUR)
    screenshot(page, "7-kubernetes-player")
    assert console.unexpected() == []
