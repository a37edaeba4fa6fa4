// The caller's jobs, newest first, one page at a time (GET /jobs?limit=&cursor=), with live
// phase and progress: each active job on the page is followed by its event stream
// (GET /jobs/{id}/events, JobList.follow); where the server offers none, watchJobs() polls.

import { ApiError, deleteJob, followEvents, getJson } from "./api.js";
import { el, formatBytes, formatWhen } from "./util.js";

export const PAGE_SIZE = 10;
const POLL_MS = 1000;
// A browser opens at most six HTTP/1.1 connections to one origin, and each event stream holds
// one for as long as its job runs: more streams than this would queue the page's own requests
// (paging, deleting) behind them. The other active jobs are polled.
const MAX_STREAMS = 3;
const ACTIVE = new Set(["pending", "processing"]);
const WORDS = { pending: "Pending", processing: "Processing", completed: "Completed", failed: "Failed" };

// Calls refresh() every POLL_MS while isActive() says some job is still moving and has no
// event stream, and once more whenever poke() is called (an upload, a delete, a stream's end).
// Returns {poke, stop}.
export function watchJobs(refresh, isActive) {
  let timer = null;
  let stopped = false;
  let running = false;
  let again = false; // poked while a refresh ran: one more right after it
  const schedule = () => {
    clearTimeout(timer);
    if (stopped) return;
    if (again) {
      again = false;
      timer = setTimeout(tick, 0);
    } else if (isActive()) {
      timer = setTimeout(tick, POLL_MS);
    }
  };
  const tick = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await refresh();
    } finally {
      running = false;
      schedule();
    }
  };
  return {
    poke: () => {
      clearTimeout(timer);
      tick();
    },
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

export class JobList {
  constructor({ list, state, newer, older, pageLabel, refreshButton, onOpen, onDownload, onError, onAuthOk }) {
    Object.assign(this, { list, state, newer, older, pageLabel, onOpen, onDownload, onError, onAuthOk });
    this.cursors = [null]; // the cursor of each page seen; the last is the current page's
    this.nextCursor = null;
    this.jobs = [];
    this.items = new Map(); // job_id -> {node, parts}
    this.loaded = false;
    this.streams = new Map(); // job_id -> AbortController of its event stream
    this.noEvents = false; // the server offers no event stream: poll
    this.watch = watchJobs(
      () => this.refresh(),
      () => this.jobs.some((job) => ACTIVE.has(job.status) && !this.streams.has(job.job_id)),
    );
    newer.addEventListener("click", () => this.go(-1));
    older.addEventListener("click", () => this.go(1));
    refreshButton.addEventListener("click", () => this.watch.poke());
  }

  get cursor() {
    return this.cursors[this.cursors.length - 1];
  }

  go(step) {
    if (step > 0 && this.nextCursor) this.cursors.push(this.nextCursor);
    else if (step < 0 && this.cursors.length > 1) this.cursors.pop();
    else return;
    this.watch.poke();
  }

  poke() {
    this.watch.poke();
  }

  async refresh() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (this.cursor) query.set("cursor", this.cursor);
    let page;
    try {
      page = await getJson(`/jobs?${query}`);
    } catch (err) {
      this.jobs = [];
      this.render([]);
      this.state.textContent = `Jobs could not be listed: ${err.detail ?? err.message}`;
      this.state.classList.add("error");
      this.onError(err);
      return;
    }
    this.onAuthOk();
    this.state.classList.remove("error");
    if (page.jobs.length === 0 && this.cursors.length > 1) {
      // The page emptied (deleted jobs): back to the one before.
      this.cursors.pop();
      return this.refresh();
    }
    this.loaded = true;
    this.jobs = page.jobs;
    this.nextCursor = page.next_cursor;
    this.render(page.jobs);
  }

  // An event stream for each active job on the page (up to MAX_STREAMS); each event updates
  // that job's line at once.
  follow(jobs) {
    const shown = new Set(jobs.map((job) => job.job_id));
    for (const [id, control] of this.streams) if (!shown.has(id)) control.abort();
    if (this.noEvents) return;
    for (const job of jobs) {
      if (this.streams.size >= MAX_STREAMS) break;
      if (!ACTIVE.has(job.status) || this.streams.has(job.job_id)) continue;
      const control = new AbortController();
      this.streams.set(job.job_id, control);
      followEvents(job.job_id, (status) => this.onStatus(status), control.signal)
        .then((streamed) => {
          if (!streamed) this.noEvents = true;
        })
        .finally(() => {
          this.streams.delete(job.job_id);
          if (!control.signal.aborted) this.watch.poke(); // its end, or polling from now on
        });
    }
  }

  onStatus(status) {
    const index = this.jobs.findIndex((job) => job.job_id === status.job_id);
    if (index < 0) return;
    this.jobs[index] = status;
    const item = this.items.get(status.job_id);
    if (item) this.update(item, status);
  }

  render(jobs) {
    this.follow(jobs);
    const seen = new Set();
    let previous = null;
    for (const job of jobs) {
      seen.add(job.job_id);
      let item = this.items.get(job.job_id);
      if (!item) {
        item = this.build(job);
        this.items.set(job.job_id, item);
      }
      this.update(item, job);
      // Keep order (newest first) without rebuilding: focus stays where it was.
      const wanted = previous ? previous.nextSibling : this.list.firstChild;
      if (wanted !== item.node) this.list.insertBefore(item.node, wanted);
      previous = item.node;
    }
    for (const [id, item] of this.items) {
      if (!seen.has(id)) {
        item.node.remove();
        this.items.delete(id);
      }
    }
    if (this.loaded) {
      const page = this.cursors.length;
      this.state.textContent = jobs.length
        ? `${jobs.length} job${jobs.length === 1 ? "" : "s"} on page ${page}${jobs.some((j) => ACTIVE.has(j.status)) ? ", updating live" : ""}.`
        : "No jobs yet. Upload a song above to start one.";
    }
    this.pageLabel.textContent = jobs.length ? `Page ${this.cursors.length}` : "";
    this.newer.disabled = this.cursors.length <= 1;
    this.older.disabled = !this.nextCursor;
  }

  build(job) {
    const parts = {
      name: el("span", { class: "name" }),
      badge: el("span", { class: "badge" }),
      progress: el("progress", { max: "100", value: "0" }),
      detail: el("p", { class: "meta" }),
      meta: el("p", { class: "meta" }),
      open: el("button", { type: "button", text: "Open player" }),
      zip: el("button", { type: "button", class: "secondary", text: "Download ZIP" }),
      remove: el("button", { type: "button", class: "danger", text: "Delete" }),
    };
    const node = el(
      "li",
      { "data-job-id": job.job_id, class: "job" },
      el("div", { class: "item-head" }, parts.name, parts.badge),
      parts.progress,
      parts.detail,
      parts.meta,
      el("div", { class: "buttons" }, parts.open, parts.zip, parts.remove),
    );
    const item = { node, parts, job };
    parts.open.addEventListener("click", () => this.onOpen(item.job));
    parts.zip.addEventListener("click", () => this.onDownload(item.job, parts.zip));
    parts.remove.addEventListener("click", () => this.remove(item));
    return item;
  }

  update(item, job) {
    item.job = job;
    const { parts } = item;
    const active = ACTIVE.has(job.status);
    parts.name.textContent = job.filename;
    parts.badge.textContent = WORDS[job.status] ?? job.status;
    parts.badge.className = `badge ${job.status}`;
    parts.progress.value = job.progress;
    parts.progress.hidden = job.status === "failed";
    parts.progress.setAttribute("aria-label", `${job.filename}: ${job.progress}% done`);
    item.node.dataset.status = job.status;
    item.node.dataset.progress = String(job.progress);
    let detail = "";
    if (job.status === "pending") {
      detail = job.message ? `Waiting: ${job.message}${job.reason ? ` (${job.reason})` : ""}` : "Waiting to start";
    } else if (job.status === "processing") {
      detail = `${job.progress}% separated${job.message ? ` · ${job.message}` : ""}`;
    } else if (job.status === "failed") {
      const why = [job.reason, job.error || job.message].filter(Boolean).join(": ");
      detail = `Failed${why ? `: ${why}` : ""}`;
    } else if (job.status === "completed") {
      detail = `Done${job.duration ? ` in ${job.duration}` : ""}${job.size ? ` · ${formatBytes(job.size)}` : ""}`;
    }
    parts.detail.textContent = detail;
    parts.detail.classList.toggle("error", job.status === "failed");
    const stems = job.two_stems ? `${job.two_stems} + no_${job.two_stems}` : job.stems.join(", ");
    const format = job.format === "mp3" && job.bitrate ? `MP3 ${job.bitrate} kbit/s` : job.format.toUpperCase();
    parts.meta.textContent = `${formatWhen(job.created_at)} · ${job.model} · ${stems} · ${format}`;
    const done = job.status === "completed";
    parts.open.hidden = !done;
    parts.zip.hidden = !done;
    if (!parts.remove.classList.contains("armed")) parts.remove.textContent = active ? "Cancel" : "Delete";
    parts.open.setAttribute("aria-label", `Open player: ${job.filename}`);
    parts.zip.setAttribute("aria-label", `Download ZIP: ${job.filename}`);
    if (!parts.remove.classList.contains("armed")) parts.remove.setAttribute("aria-label", `${parts.remove.textContent}: ${job.filename}`);
  }

  // Two presses: the first arms the button for a few seconds, the second deletes.
  async remove(item) {
    const button = item.parts.remove;
    const word = ACTIVE.has(item.job.status) ? "cancel" : "delete";
    if (!button.classList.contains("armed")) {
      button.classList.add("armed");
      button.textContent = `Really ${word}?`;
      button.setAttribute("aria-label", `Really ${word}? ${item.job.filename}`);
      item.disarm = setTimeout(() => {
        button.classList.remove("armed");
        this.update(item, item.job);
      }, 5000);
      return;
    }
    clearTimeout(item.disarm);
    button.disabled = true;
    try {
      await deleteJob(item.job.job_id);
      this.state.textContent = `Deleted ${item.job.filename}.`;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) {
        this.onError(err);
      }
    } finally {
      button.disabled = false;
      button.classList.remove("armed");
    }
    this.watch.poke();
  }
}
