// Telling the user what happens: the notice line and the busy bar.
import { ui } from "./dom.js";

let noticeTimer = null;

export function notify(message, kind = "info", { sticky = false } = {}) {
  clearTimeout(noticeTimer);
  ui.noticeText.textContent = message;
  ui.notice.dataset.kind = kind;
  ui.notice.setAttribute("role", kind === "error" ? "alert" : "status");
  ui.notice.hidden = false;
  if (!sticky) noticeTimer = setTimeout(clearNotice, kind === "error" ? 9000 : 5000);
}

export function clearNotice() {
  clearTimeout(noticeTimer);
  ui.notice.hidden = true;
}

export function setBusy(busy) {
  ui.progress.hidden = !busy;
  document.body.classList.toggle("busy", busy);
  ui.main.setAttribute("aria-busy", busy ? "true" : "false");
}
