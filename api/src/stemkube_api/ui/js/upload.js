// Uploads: files dropped or picked, one job each, with the options of GET /models; the size
// limit checked before a byte is sent; progress per file; a refusal shown with the API's detail.

import { upload } from "./api.js";
import { el, formatBytes } from "./util.js";

export class Uploader {
  constructor(dom, { onUploaded, onError }) {
    this.dom = dom;
    this.onUploaded = onUploaded;
    this.onError = onError;
    this.models = [];
    this.maxSize = null;
    const { drop, fileInput } = dom;
    fileInput.addEventListener("change", () => {
      this.add([...fileInput.files]);
      fileInput.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (event) => {
        event.preventDefault();
        drop.classList.add("over");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      drop.addEventListener(type, () => drop.classList.remove("over"));
    }
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      this.add([...(event.dataTransfer?.files ?? [])]);
    });
    dom.model.addEventListener("change", () => this.showStems());
    dom.format.addEventListener("change", () => {
      dom.bitrateField.hidden = dom.format.value !== "mp3";
    });
    for (const radio of dom.modes) radio.addEventListener("change", () => this.showMode());
  }

  setLimit(bytes, text) {
    this.maxSize = bytes;
    this.maxSizeText = text || formatBytes(bytes);
    this.dom.sizeLimit.textContent = `Size limit: ${text || formatBytes(bytes)} per file.`;
  }

  setModels(answer) {
    this.models = answer.models;
    const { model } = this.dom;
    model.replaceChildren(
      ...answer.models.map((m) =>
        el("option", { value: m.name, selected: m.name === answer.default }, m.default ? `${m.name} (default)` : m.name),
      ),
    );
    model.disabled = false;
    this.showStems();
  }

  current() {
    return this.models.find((m) => m.name === this.dom.model.value);
  }

  showStems() {
    const model = this.current();
    if (!model) return;
    this.dom.description.textContent = model.description || "";
    this.dom.stemBoxes.replaceChildren(
      ...model.stems.map((stem) =>
        el(
          "span",
          { class: "choice" },
          el("input", { type: "checkbox", id: `stem-${stem}`, value: stem, checked: true }),
          el("label", { for: `stem-${stem}` }, stem),
        ),
      ),
    );
    this.dom.twoStem.replaceChildren(...model.stems.map((stem) => el("option", { value: stem }, stem)));
  }

  mode() {
    return this.dom.modes.find((r) => r.checked)?.value ?? "all";
  }

  showMode() {
    const mode = this.mode();
    this.dom.stemBoxes.hidden = mode !== "some";
    this.dom.twoBox.hidden = mode !== "two";
  }

  fields() {
    const { dom } = this;
    const fields = { model: dom.model.value || undefined, format: dom.format.value };
    if (dom.format.value === "mp3") fields.bitrate = dom.bitrate.value;
    const mode = this.mode();
    if (mode === "some") {
      const chosen = [...dom.stemBoxes.querySelectorAll("input:checked")].map((box) => box.value);
      fields.stems = chosen.join(",");
    } else if (mode === "two") {
      fields.two_stems = dom.twoStem.value;
    }
    return fields;
  }

  add(files) {
    for (const file of files) this.start(file);
  }

  start(file) {
    const bar = el("progress", { max: "100", value: "0", "aria-label": `Upload of ${file.name}` });
    const text = el("p", { class: "meta" }, `${formatBytes(file.size)} · starting…`);
    const cancel = el("button", { type: "button", class: "secondary", text: "Cancel upload", "aria-label": `Cancel upload: ${file.name}` });
    const item = el(
      "li",
      { class: "upload", "data-file": file.name, "data-state": "uploading" },
      el("div", { class: "item-head" }, el("span", { class: "name" }, file.name)),
      bar,
      text,
      el("div", { class: "buttons" }, cancel),
    );
    this.dom.list.prepend(item);
    const refuse = (message) => {
      item.dataset.state = "refused";
      bar.hidden = true;
      cancel.hidden = true;
      text.textContent = `Refused: ${message}`;
      text.classList.add("error");
    };
    if (this.maxSize !== null && file.size > this.maxSize) {
      refuse(`the file is ${formatBytes(file.size)}; the limit is ${this.maxSizeText}`);
      return;
    }
    const fields = this.fields();
    if (fields.stems === "") {
      refuse("choose at least one stem");
      return;
    }
    const job = upload(file, fields, (sent, total) => {
      const percent = Math.floor((sent / total) * 100);
      bar.value = percent;
      text.textContent = `${formatBytes(sent)} of ${formatBytes(total)} · ${percent}%`;
    });
    cancel.addEventListener("click", () => job.abort());
    job.promise.then(
      (answer) => {
        item.dataset.state = "done";
        item.dataset.jobId = answer.job_id;
        bar.value = 100;
        cancel.hidden = true;
        text.textContent = "Uploaded: the job is in the list below.";
        this.onUploaded(answer);
      },
      (err) => {
        refuse(err.detail ?? err.message);
        if (err.status === 401) this.onError(err);
      },
    );
  }
}
