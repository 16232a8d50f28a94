// Uploading a photo: the file chooser and drag and drop, checks before sending, and showing
// the uploaded photo as the query.
import { api } from "./api.js";
import { ui } from "./dom.js";
import { clearNotice, notify, setBusy } from "./feedback.js";
import { formatMB } from "./format.js";
import { rememberQuery } from "./navigation.js";
import { showQuery } from "./query.js";
import { state } from "./state.js";

export async function uploadFile(file) {
  if (!file || state.uploading) return;
  if (file.size > state.maxUploadBytes) {
    notify(`“${file.name}” is too big (${formatMB(file.size)}); the limit is ${formatMB(state.maxUploadBytes)}.`, "error");
    return;
  }
  if (file.type && !file.type.startsWith("image/")) {
    notify(`“${file.name}” is not an image. Try a JPEG, PNG, WebP, GIF, BMP or TIFF photo.`, "error");
    return;
  }
  const form = new FormData();
  form.append("file_to_upload", file, file.name);
  form.append("collapse", state.collapse ? "1" : "0");
  setUploading(true);
  notify(`Looking for objects in “${file.name}”…`, "info", { sticky: true });
  try {
    const data = await api("/upload_file", { method: "POST", body: form });
    if (data.duplicate) notify("This photo is already in the collection; here it is.", "info");
    else clearNotice();
    state.with = [];
    state.without = [];
    rememberQuery(data.name);
    await showQuery(data.name, { upload: data });
  } catch (err) {
    notify(err.message, "error");
  } finally {
    setUploading(false);
    ui.fileInput.value = "";
  }
}

function setUploading(uploading) {
  state.uploading = uploading;
  ui.upload.disabled = uploading;
  ui.dropzone.disabled = uploading;
  ui.upload.classList.toggle("is-busy", uploading);
  ui.uploadLabel.replaceChildren(...(uploading ? ["Analysing…"] : ["Upload", wideOnly(" a photo")]));
  ui.upload.setAttribute("aria-label", uploading ? "Analysing the photo…" : "Upload a photo");
  setBusy(uploading);
}

function wideOnly(text) {
  const span = document.createElement("span");
  span.className = "wide-only";
  span.textContent = text;
  return span;
}

export function setUpDragAndDrop() {
  let depth = 0;
  const hasFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  window.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    ui.dropOverlay.hidden = false;
  });
  window.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  window.addEventListener("dragleave", (event) => {
    if (!hasFiles(event)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) ui.dropOverlay.hidden = true;
  });
  window.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    ui.dropOverlay.hidden = true;
    const [file] = event.dataTransfer.files;
    if (event.dataTransfer.files.length > 1) notify("Several files were dropped; only the first one is used.", "info");
    uploadFile(file);
  });
}
