// Talking to the API: the key (kept in localStorage, sent as Authorization: Bearer), JSON
// requests, uploads with progress (XMLHttpRequest), downloads as blobs. Every URL is relative to
// the page (/ui/), so the page works behind a path prefix too.

const KEY_STORAGE = "stemkube.apiKey";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

export function apiUrl(path) {
  return new URL(`..${path}`, document.baseURI).toString();
}

export function getKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage off (private mode): the key lives as long as the page.
  }
  sessionKey = key;
}

let sessionKey = null;

function authHeaders() {
  const key = sessionKey ?? getKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function detailOf(response) {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && typeof body.detail === "string") return body.detail;
    if (body && body.detail) return JSON.stringify(body.detail);
  } catch {
    // not JSON: a proxy's page
  }
  return text.trim().slice(0, 300) || `${response.status} ${response.statusText}`;
}

export async function request(method, path, { absolute = false } = {}) {
  let response;
  try {
    response = await fetch(absolute ? path : apiUrl(path), {
      method,
      headers: { Accept: "application/json", ...authHeaders() },
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, `the service cannot be reached (${err.message})`);
  }
  if (!response.ok) throw new ApiError(response.status, await detailOf(response));
  return response;
}

export async function getJson(path) {
  return (await request("GET", path)).json();
}

export async function deleteJob(jobId) {
  return (await request("DELETE", `/job/${encodeURIComponent(jobId)}`)).json();
}

export async function getConfig() {
  // The page's own file: open like the page, beside it.
  const response = await fetch(new URL("config.json", document.baseURI), { cache: "no-store" });
  if (!response.ok) throw new ApiError(response.status, await detailOf(response));
  return response.json();
}

// The file name of a download: RFC 5987's filename* first, then the plain one.
export function filenameOf(disposition, fallback) {
  if (!disposition) return fallback;
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      // fall through to the plain name
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"/i.exec(disposition) || /filename\s*=\s*([^;]+)/i.exec(disposition);
  return plain ? plain[1].trim() : fallback;
}

// GET path with the key, as a blob and the server's name for it.
export async function fetchBlob(path, fallbackName) {
  const response = await request("GET", path);
  const blob = await response.blob();
  return { blob, name: filenameOf(response.headers.get("Content-Disposition"), fallbackName) };
}

export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.rel = "noopener";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// POST /upload with progress: onProgress(sent, total). Resolves to the API's answer; rejects
// with an ApiError carrying the API's detail. Returns {promise, abort}.
export function upload(file, fields, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) {
      if (value !== undefined && value !== null && value !== "") form.append(name, value);
    }
    form.append("file", file, file.name);
    xhr.open("POST", apiUrl("/upload"));
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        resolve(body);
        return;
      }
      const detail = body && typeof body.detail === "string"
        ? body.detail
        : (xhr.responseText || "").trim().slice(0, 300) || `${xhr.status} ${xhr.statusText}`;
      reject(new ApiError(xhr.status, detail));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "the upload failed: the connection broke")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "upload cancelled")));
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

// Follows GET /jobs/{id}/events (Server-Sent Events) with fetch(), so that the key goes in the
// Authorization header (a browser's EventSource sends none), calling onStatus with each
// `status` event's job (the JSON of GET /status). Resolves false at once when the server offers
// no stream (an older server, a proxy that buffers): the caller polls instead; true once the
// stream ended (the job finished or went, the stream's lifetime, a cut, or `signal`).
export async function followEvents(jobId, onStatus, signal) {
  let response;
  try {
    response = await fetch(apiUrl(`/jobs/${encodeURIComponent(jobId)}/events`), {
      headers: { Accept: "text/event-stream", ...authHeaders() },
      cache: "no-store",
      signal,
    });
  } catch {
    return false;
  }
  const type = response.headers.get("content-type") || "";
  if (!response.ok || !type.startsWith("text/event-stream") || !response.body) return false;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (event === "status" && data.length) onStatus(JSON.parse(data.join("\n")));
      }
    }
  } catch {
    // Aborted or cut: the list's next refresh takes over.
  }
  return true;
}
