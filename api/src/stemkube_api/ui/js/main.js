// The page put together: the key, the uploader, the job list, the player. window.stemkube is a
// small hook for people debugging and for the browser tests (the player's gains).

import { fetchBlob, getConfig, getJson, getKey, saveBlob, setKey } from "./api.js";
import { JobList } from "./jobs.js";
import { Player } from "./player.js";
import { Uploader } from "./upload.js";
import { baseName } from "./util.js";

const $ = (id) => document.getElementById(id);

const banner = $("banner");

function showError(err) {
  const detail = err.detail ?? err.message ?? String(err);
  if (err.status === 401) {
    banner.textContent = `${detail}. Paste an API key under "API key".`;
    $("key-box").open = true;
  } else {
    banner.textContent = detail;
  }
  banner.hidden = false;
}

function clearAuthError() {
  if (!banner.hidden && /API key/.test(banner.textContent)) banner.hidden = true;
}

function showKeyState() {
  $("key-state").textContent = getKey() ? "saved in this browser" : "none saved";
}

const player = new Player(
  {
    section: $("player"),
    body: $("player-body"),
    song: $("player-song"),
    state: $("player-state"),
    play: $("play"),
    seek: $("seek"),
    time: $("time"),
    stems: $("stems"),
    zip: $("dl-zip"),
    mix: $("dl-mix"),
    close: $("player-close"),
  },
  { onError: showError },
);

const jobs = new JobList({
  list: $("jobs"),
  state: $("jobs-state"),
  newer: $("jobs-newer"),
  older: $("jobs-older"),
  pageLabel: $("jobs-page"),
  refreshButton: $("jobs-refresh"),
  onOpen: (job) => player.open(job),
  onDownload: async (job, button) => {
    button.disabled = true;
    try {
      const { blob, name } = await fetchBlob(`/download/${job.job_id}`, `${baseName(job.filename)}_stems.zip`);
      saveBlob(blob, name);
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
    }
  },
  onError: showError,
  onAuthOk: clearAuthError,
});

const uploader = new Uploader(
  {
    drop: $("drop"),
    fileInput: $("file-input"),
    model: $("model"),
    description: $("model-description"),
    modes: [...document.querySelectorAll('input[name="stem-mode"]')],
    stemBoxes: $("stem-boxes"),
    twoBox: $("two-box"),
    twoStem: $("two-stem"),
    format: $("format"),
    bitrate: $("bitrate"),
    bitrateField: $("bitrate-field"),
    sizeLimit: $("size-limit"),
    list: $("uploads"),
  },
  { onUploaded: () => jobs.poke(), onError: showError },
);

async function loadModels() {
  try {
    uploader.setModels(await getJson("/models"));
  } catch (err) {
    $("model").replaceChildren(new Option("the server's default"));
    showError(err);
  }
}

async function loadConfig() {
  try {
    const config = await getConfig();
    uploader.setLimit(config.max_file_size, config.max_file_size_text);
  } catch {
    $("size-limit").textContent = "";
  }
}

$("key-input").value = getKey();
showKeyState();
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setKey($("key-input").value.trim());
  showKeyState();
  banner.hidden = true;
  loadModels();
  jobs.poke();
});
$("key-forget").addEventListener("click", () => {
  setKey("");
  $("key-input").value = "";
  showKeyState();
  jobs.poke();
});

document.addEventListener("keydown", (event) => {
  // Space plays and pauses once the player is open, unless typing or on a control of its own.
  if (event.key !== " " || $("player").hidden || $("player-body").hidden) return;
  const target = event.target;
  if (target instanceof HTMLElement && target.closest("input, select, textarea, button, summary, a")) return;
  event.preventDefault();
  player.toggle();
});

window.stemkube = {
  player: {
    gains: () => player.gains(),
    state: () => player.state(),
    renderMix: async () => {
      const mixed = await player.renderMix();
      return { channels: mixed.numberOfChannels, length: mixed.length, sampleRate: mixed.sampleRate };
    },
  },
  jobs: () => jobs.jobs.map((job) => ({ ...job })),
};

loadConfig();
loadModels();
jobs.poke();
