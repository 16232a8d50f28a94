// Whether the server is ready (/healthz), waiting while it starts, and the limits it announces.
import { ui } from "./dom.js";
import { clearNotice, notify } from "./feedback.js";
import { formatMB } from "./format.js";
import { state } from "./state.js";

export async function readHealth() {
  const response = await fetch("/healthz", { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  return { ready: response.ok, body };
}

let readyPromise = null;
export function waitUntilReady() {
  if (readyPromise) return readyPromise;
  notify("The server is starting (loading the detector and the index)…", "info", { sticky: true });
  readyPromise = new Promise((resolve) => {
    const poll = async () => {
      try {
        const { ready, body } = await readHealth();
        if (ready) {
          applyHealth(body);
          clearNotice();
          readyPromise = null;
          resolve();
          return;
        }
        if (body && body.status === "error") {
          notify(`The server could not start: ${body.message || "unknown error"}. It keeps retrying.`, "error", { sticky: true });
        }
      } catch (err) { /* server not up yet: keep polling */ }
      setTimeout(poll, 2000);
    };
    poll();
  });
  return readyPromise;
}

export function applyHealth(body) {
  if (body && body.max_upload_bytes) {
    state.maxUploadBytes = body.max_upload_bytes;
    ui.uploadHint.textContent = `JPEG, PNG, WebP, GIF, BMP or TIFF, up to ${formatMB(state.maxUploadBytes)}`;
  }
  if (body && body.page_size) state.perPage = body.page_size;
}
