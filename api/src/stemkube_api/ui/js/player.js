// The stems player: every stem of a completed job decoded (decodeAudioData) and played in sync
// on one timeline. Each stem is one AudioBufferSourceNode started at the same context time into
// its own GainNode; mute, solo and volume only change the gains. The current mix renders in an
// OfflineAudioContext with the same gains, as a 16-bit WAV.

import { fetchBlob, saveBlob } from "./api.js";
import { baseName, el, formatClock } from "./util.js";
import { encodeWav } from "./wav.js";

const START_AHEAD = 0.05; // seconds: every source gets the same start time, a moment ahead

export class Player {
  constructor(dom, { onError }) {
    this.dom = dom;
    this.onError = onError;
    this.ctx = null;
    this.job = null;
    this.stems = [];
    this.sources = [];
    this.playing = false;
    this.offset = 0; // position while paused, seconds
    this.startedAt = 0; // context time at which position 0 would have played
    this.duration = 0;
    this.loadToken = 0;
    this.frame = null;
    dom.play.addEventListener("click", () => this.toggle());
    dom.seek.addEventListener("input", () => this.seek(Number(dom.seek.value)));
    dom.close.addEventListener("click", () => this.close());
    dom.zip.addEventListener("click", () => this.download(`/download/${this.job.job_id}`, `${baseName(this.job.filename)}_stems.zip`, dom.zip));
    dom.mix.addEventListener("click", () => this.downloadMix());
    this.resize = new ResizeObserver(() => this.drawAll());
  }

  context() {
    if (!this.ctx) this.ctx = new AudioContext();
    return this.ctx;
  }

  // Opens a completed job: fetches each stem with the key, decodes, draws.
  async open(job) {
    this.stop();
    this.clearStems();
    const token = ++this.loadToken;
    this.job = job;
    const { dom } = this;
    dom.section.hidden = false;
    dom.body.hidden = true;
    dom.song.textContent = job.filename;
    dom.section.dataset.state = "loading";
    dom.state.classList.remove("error");
    dom.state.textContent = `Loading ${job.stems.length} stems…`;
    dom.section.scrollIntoView({ behavior: "smooth", block: "start" });
    const ctx = this.context();
    try {
      let done = 0;
      const loaded = await Promise.all(
        job.stems.map(async (name) => {
          const { blob } = await fetchBlob(`/download/${job.job_id}/${encodeURIComponent(name)}`, name);
          const buffer = await ctx.decodeAudioData(await blob.arrayBuffer());
          done += 1;
          if (token === this.loadToken) dom.state.textContent = `Loading stems… ${done} of ${job.stems.length}`;
          return { name, buffer };
        }),
      );
      if (token !== this.loadToken) return;
      this.duration = Math.max(...loaded.map((s) => s.buffer.duration));
      this.stems = loaded.map(({ name, buffer }) => this.buildStem(name, buffer));
      this.computePeaks();
      this.offset = 0;
      dom.seek.max = String(this.duration);
      dom.seek.value = "0";
      dom.body.hidden = false;
      dom.state.textContent = `${this.stems.length} stems, ${formatClock(this.duration)}. Space or the Play button plays; mute, solo and volume per stem.`;
      dom.section.dataset.state = "ready";
      this.updateGains();
      this.drawAll();
      this.tickTime();
      dom.play.focus();
    } catch (err) {
      if (token !== this.loadToken) return;
      dom.section.dataset.state = "error";
      dom.state.classList.add("error");
      dom.state.textContent = `The stems could not be loaded: ${err.detail ?? err.message}`;
      this.onError(err);
    }
  }

  buildStem(name, buffer) {
    const ctx = this.context();
    const gain = ctx.createGain();
    gain.connect(ctx.destination);
    const stem = { name, buffer, gain, muted: false, solo: false, volume: 1, peaks: null };
    const id = `stem-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    const mute = el("button", { type: "button", class: "secondary toggle", "aria-pressed": "false", text: "Mute", "aria-label": `Mute ${name}` });
    const solo = el("button", { type: "button", class: "secondary toggle", "aria-pressed": "false", text: "Solo", "aria-label": `Solo ${name}` });
    const volume = el("input", { type: "range", id: `${id}-volume`, min: "0", max: "1.5", step: "0.05", value: "1" });
    const save = el("button", { type: "button", class: "secondary", text: "Download", "aria-label": `Download ${name}` });
    const canvas = el("canvas", { class: "wave", role: "img", "aria-label": `Waveform of ${name}; click to seek` });
    mute.addEventListener("click", () => {
      stem.muted = !stem.muted;
      mute.setAttribute("aria-pressed", String(stem.muted));
      this.updateGains();
    });
    solo.addEventListener("click", () => {
      stem.solo = !stem.solo;
      solo.setAttribute("aria-pressed", String(stem.solo));
      this.updateGains();
    });
    volume.addEventListener("input", () => {
      stem.volume = Number(volume.value);
      this.updateGains();
    });
    save.addEventListener("click", () => {
      const ext = this.job.format;
      this.download(`/download/${this.job.job_id}/${encodeURIComponent(name)}`, `${baseName(this.job.filename)}_${name}.${ext}`, save);
    });
    canvas.addEventListener("pointerdown", (event) => {
      const box = canvas.getBoundingClientRect();
      this.seek(((event.clientX - box.left) / box.width) * this.duration);
    });
    stem.node = el(
      "li",
      { "data-stem": name },
      el(
        "div",
        { class: "stem-head" },
        el("span", { class: "name" }, name),
        mute,
        solo,
        el("span", { class: "grow" }, el("label", { for: `${id}-volume` }, "Volume "), volume),
        save,
      ),
      canvas,
    );
    stem.canvas = canvas;
    this.dom.stems.append(stem.node);
    this.resize.observe(canvas);
    return stem;
  }

  clearStems() {
    for (const stem of this.stems) {
      stem.gain.disconnect();
      this.resize.unobserve(stem.canvas);
    }
    this.stems = [];
    this.dom.stems.replaceChildren();
  }

  // What each stem's gain should be: 0 when muted or when others are soloed, else its volume.
  effectiveGain(stem) {
    const anySolo = this.stems.some((s) => s.solo);
    if (stem.muted || (anySolo && !stem.solo)) return 0;
    return stem.volume;
  }

  updateGains() {
    for (const stem of this.stems) {
      const value = this.effectiveGain(stem);
      stem.gain.gain.value = value;
      stem.node.classList.toggle("stem-off", value === 0);
    }
  }

  gains() {
    return Object.fromEntries(this.stems.map((s) => [s.name, s.gain.gain.value]));
  }

  position() {
    if (!this.playing) return this.offset;
    return Math.min(this.duration, this.ctx.currentTime - this.startedAt);
  }

  async toggle() {
    if (this.playing) this.pause();
    else await this.play();
  }

  async play() {
    if (!this.stems.length) return;
    const ctx = this.context();
    if (ctx.state === "suspended") await ctx.resume();
    if (this.offset >= this.duration - 0.01) this.offset = 0;
    const when = ctx.currentTime + START_AHEAD;
    this.sources = this.stems.map((stem) => {
      const source = ctx.createBufferSource();
      source.buffer = stem.buffer;
      source.connect(stem.gain);
      source.start(when, Math.min(this.offset, stem.buffer.duration));
      return source;
    });
    this.startedAt = when - this.offset;
    this.playing = true;
    this.dom.play.textContent = "Pause";
    this.dom.play.setAttribute("aria-pressed", "true");
    this.tick();
  }

  stopSources() {
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        // never started
      }
      source.disconnect();
    }
    this.sources = [];
  }

  pause() {
    if (!this.playing) return;
    this.offset = this.position();
    this.stopSources();
    this.playing = false;
    cancelAnimationFrame(this.frame);
    this.dom.play.textContent = "Play";
    this.dom.play.setAttribute("aria-pressed", "false");
    this.tickTime();
  }

  stop() {
    this.pause();
    this.offset = 0;
  }

  seek(seconds) {
    const target = Math.max(0, Math.min(this.duration, seconds));
    if (this.playing) {
      this.stopSources();
      this.playing = false;
      this.offset = target;
      this.play();
    } else {
      this.offset = target;
      this.tickTime();
    }
  }

  tick() {
    this.tickTime();
    if (!this.playing) return;
    if (this.position() >= this.duration) {
      this.pause();
      this.offset = 0;
      this.tickTime();
      return;
    }
    this.frame = requestAnimationFrame(() => this.tick());
  }

  tickTime() {
    const at = this.position();
    this.dom.time.textContent = `${formatClock(at)} / ${formatClock(this.duration)}`;
    if (document.activeElement !== this.dom.seek || this.playing) this.dom.seek.value = String(at);
    this.dom.seek.setAttribute("aria-valuetext", `${formatClock(at)} of ${formatClock(this.duration)}`);
    this.drawAll();
  }

  // Peaks per 1/2000 of the timeline, from every channel: drawn at any width without decoding again.
  computePeaks(columns = 2000) {
    let loudest = 0;
    for (const stem of this.stems) {
      const { buffer } = stem;
      const peaks = new Float32Array(columns);
      const per = (this.duration * buffer.sampleRate) / columns;
      for (let c = 0; c < buffer.numberOfChannels; c += 1) {
        const data = buffer.getChannelData(c);
        for (let col = 0; col < columns; col += 1) {
          const from = Math.floor(col * per);
          const to = Math.min(data.length, Math.floor((col + 1) * per));
          let peak = peaks[col];
          for (let i = from; i < to; i += 1) {
            const v = Math.abs(data[i]);
            if (v > peak) peak = v;
          }
          peaks[col] = peak;
        }
      }
      stem.peaks = peaks;
      for (const p of peaks) if (p > loudest) loudest = p;
    }
    // One scale for all stems, so their loudness compares; a silent song stays flat.
    this.scale = loudest > 0 ? 1 / loudest : 0;
  }

  drawAll() {
    for (const stem of this.stems) this.draw(stem);
  }

  draw(stem) {
    const { canvas, peaks } = stem;
    if (!peaks) return;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, width, height);
    const styles = getComputedStyle(document.documentElement);
    const on = this.effectiveGain(stem) > 0;
    g.fillStyle = (on ? styles.getPropertyValue("--wave") : styles.getPropertyValue("--wave-off")).trim() || "#0b57d0";
    const mid = height / 2;
    for (let x = 0; x < width; x += 1) {
      const from = Math.floor((x / width) * peaks.length);
      const to = Math.max(from + 1, Math.floor(((x + 1) / width) * peaks.length));
      let peak = 0;
      for (let i = from; i < to; i += 1) if (peaks[i] > peak) peak = peaks[i];
      const half = Math.max(peak > 0 ? 0.5 : 0, peak * this.scale * (mid - 1));
      g.fillRect(x, mid - half, 1, half * 2);
    }
    const at = this.duration ? (this.position() / this.duration) * width : 0;
    g.fillStyle = "#e37400";
    g.fillRect(Math.min(width - 2 * ratio, at), 0, 2 * ratio, height);
  }

  async download(path, fallback, button) {
    button.disabled = true;
    const label = button.textContent;
    button.textContent = "Downloading…";
    try {
      const { blob, name } = await fetchBlob(path, fallback);
      saveBlob(blob, name);
    } catch (err) {
      this.onError(err);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  // The mix as heard now: every stem at its current gain, rendered offline.
  async renderMix() {
    const rate = this.stems[0].buffer.sampleRate;
    const channels = Math.max(...this.stems.map((s) => s.buffer.numberOfChannels));
    const offline = new OfflineAudioContext(channels, Math.ceil(this.duration * rate), rate);
    for (const stem of this.stems) {
      const source = offline.createBufferSource();
      source.buffer = stem.buffer;
      const gain = offline.createGain();
      gain.gain.value = this.effectiveGain(stem);
      source.connect(gain).connect(offline.destination);
      source.start(0);
    }
    return offline.startRendering();
  }

  async downloadMix() {
    const button = this.dom.mix;
    button.disabled = true;
    const label = button.textContent;
    button.textContent = "Rendering…";
    try {
      const mixed = await this.renderMix();
      saveBlob(encodeWav(mixed), `${baseName(this.job.filename)}_mix.wav`);
    } catch (err) {
      this.onError(err);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  close() {
    this.stop();
    this.loadToken += 1;
    this.clearStems();
    this.job = null;
    this.dom.section.hidden = true;
    this.dom.section.dataset.state = "closed";
  }

  // The debug hook's view (window.stemkube.player.state()).
  state() {
    return {
      job: this.job && this.job.job_id,
      stems: this.stems.map((s) => s.name),
      duration: this.duration,
      playing: this.playing,
      position: this.position(),
      context: this.ctx ? this.ctx.state : null,
    };
  }
}
