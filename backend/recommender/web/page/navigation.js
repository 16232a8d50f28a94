// Moving between views: links, the address bar and the history (Back and Forward).
import { api } from "./api.js";
import { ui } from "./dom.js";
import { clearNotice, notify } from "./feedback.js";
import { showHome } from "./home.js";
import { showQuery } from "./query.js";
import { navigateSearch, showSearch } from "./search.js";
import { photoUrl, queryUrl, splitNames, state } from "./state.js";

export function navigate(name) {
  if (name === state.query && !state.with.length && !state.without.length) return;
  state.with = [];
  state.without = [];
  history.pushState({ q: name }, "", queryUrl(name));
  clearNotice();
  showQuery(name);
}

// The address bar names the uploaded photo, so the view can be shared and Back leaves it.
// Uploading the photo the address already names (a duplicate) replaces the entry: a second
// copy would make Back appear to do nothing.
export function rememberQuery(name) {
  const url = photoUrl(name);
  if (new URLSearchParams(location.search).get("q") === name) history.replaceState({ q: name }, "", url);
  else history.pushState({ q: name }, "", url);
}

export function goHome(push = true) {
  if (push) history.pushState({}, "", "/");
  showHome();
}

export function route() {
  const params = new URLSearchParams(location.search);
  state.collapse = params.get("collapse") !== "0";
  ui.collapseToggle.checked = state.collapse;
  const name = params.get("q");
  const search = params.get("search");
  if (name) showQuery(name, { withs: splitNames(params.get("with")), withouts: splitNames(params.get("without")) });
  else if (search) showSearch(search);
  else showHome();
}

export function onLinkClick(event) {
  const link = event.target.closest("a[data-name], a[data-search]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  if (link.dataset.search) navigateSearch(link.dataset.search);
  else navigate(link.dataset.name);
}

export async function openRandom() {
  ui.random.disabled = true;
  try {
    const image = await api("/random");
    navigate(image.name);
  } catch (err) {
    notify(err.status === 404 ? "The collection is empty: upload a photo first." : err.message, "error");
  } finally {
    ui.random.disabled = false;
  }
}
