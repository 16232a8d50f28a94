// The query view: one photo, what was found in it, the filters on its objects and its
// similar photos, page by page.
import { api } from "./api.js";
import { renderDetections } from "./detections.js";
import { show, ui } from "./dom.js";
import { notify, setBusy } from "./feedback.js";
import { enc, listSentence } from "./format.js";
import { waitUntilReady } from "./health.js";
import { showHome } from "./home.js";
import { clearList, countWithFolded, makeCard, withFolded } from "./results.js";
import { queryUrl, state } from "./state.js";

export async function showQuery(name, { upload = null, withs = [], withouts = [] } = {}) {
  state.generation += 1;
  const generation = state.generation;
  state.query = name;
  state.search = null;
  state.with = [...withs];
  state.without = [...withouts];
  show("query");
  clearResults();
  ui.objects.replaceChildren();
  ui.boxes.replaceChildren();
  ui.noObjects.hidden = true;
  ui.queryTitle.textContent = name;
  ui.queryMeta.textContent = "";
  ui.queryImage.removeAttribute("src");
  ui.queryImage.alt = `Photo ${name}`;
  ui.queryImage.src = `/images/${enc(name)}`;
  document.title = `${name} · Discover`;
  window.scrollTo({ top: 0 });
  setBusy(true);
  try {
    const detectionsPromise = upload
      ? Promise.resolve({ name, detector: upload.detector, width: upload.width, height: upload.height, detections: upload.detections })
      : api(`/images/${enc(name)}/detections`);
    const similarPromise = upload && upload.similar ? Promise.resolve(upload.similar) : fetchSimilar(name, 1);
    const [detections, similar] = await Promise.all([detectionsPromise, similarPromise]);
    if (generation !== state.generation) return;
    renderDetections(detections, cycleFilter);
    appendResults(similar);
    renderFilters();
    ui.queryView.querySelector("h1").focus({ preventScroll: true });
  } catch (err) {
    if (generation !== state.generation) return;
    if (err.status === 404) {
      setBusy(false);
      notify(`There is no photo called “${name}” in the collection (it may have been deleted).`, "error");
      history.replaceState({}, "", "/");
      showHome();
    } else {
      notify(err.message, "error");
      if (err.status === 503) waitUntilReady().then(() => { if (generation === state.generation) showQuery(name); });
    }
  } finally {
    if (generation === state.generation) setBusy(false);
  }
}

function fetchSimilar(name, page) {
  const params = new URLSearchParams({ page, per_page: state.perPage, collapse: state.collapse ? 1 : 0 });
  if (state.with.length) params.set("with", state.with.join(","));
  if (state.without.length) params.set("without", state.without.join(","));
  return api(`/get_similar/${enc(name)}?${params}`);
}

function clearResults() {
  state.page = 0;
  state.total = 0;
  state.loaded = 0;
  clearList(ui.results, ui.more, ui.resultsEmpty, ui.similarCount);
}

// ---------------------------------------------------------------- filters on the query's objects

const FILTER_LABELS = { with: "must have", without: "must not have" };

function filterOf(name) {
  if (state.with.includes(name)) return "with";
  if (state.without.includes(name)) return "without";
  return "any";
}

// A click on an object cycles it: any → must have → must not have → any.
function cycleFilter(name) {
  const next = { any: "with", with: "without", without: "any" }[filterOf(name)];
  state.with = state.with.filter((c) => c !== name);
  state.without = state.without.filter((c) => c !== name);
  if (next === "with") state.with.push(name);
  if (next === "without") state.without.push(name);
  applyFilters();
}

export function applyFilters() {
  history.replaceState({ q: state.query }, "", queryUrl(state.query));
  renderFilters();
  reloadResults();
}

function renderFilters() {
  for (const li of ui.objects.children) {
    const filter = filterOf(li.dataset.class);
    li.dataset.filter = filter;
    li.setAttribute("aria-pressed", filter === "any" ? "false" : "true");
    li.querySelector(".object-filter").textContent = FILTER_LABELS[filter] || "";
  }
  const parts = [];
  if (state.with.length) parts.push(`Must have ${listSentence(state.with)}`);
  if (state.without.length) parts.push(`must not have ${listSentence(state.without)}`);
  ui.filters.hidden = parts.length === 0;
  ui.filtersText.textContent = parts.length ? `${parts.join("; ")}.` : "";
}

async function reloadResults() {
  state.generation += 1;
  const generation = state.generation;
  clearResults();
  setBusy(true);
  try {
    const page = await fetchSimilar(state.query, 1);
    if (generation !== state.generation) return;
    appendResults(page);
  } catch (err) {
    if (generation === state.generation) notify(err.message, "error");
  } finally {
    if (generation === state.generation) setBusy(false);
  }
}

// ---------------------------------------------------------------- similar photos

// The server's line weighs each shared class by its share of the similarity score.
function whyLine(result) {
  if (result.contributions && result.contributions.length) return `Similar for ${result.why}`;
  return result.why || "Shares no object; closest by overall content";
}

const similarCard = (result) => makeCard(result, result.shared_classes || [], whyLine(result));

function appendResults(page) {
  state.page = page.page;
  state.perPage = page.per_page;
  state.total = page.total;
  if (page.constraints) {  // the server's spelling of the classes ("dogs" -> "dog")
    state.with = page.constraints.with;
    state.without = page.constraints.without;
  }
  const cards = page.results.flatMap((result) => withFolded(similarCard(result), result.near_duplicates, similarCard));
  ui.results.append(...cards);
  state.loaded += countWithFolded(page.results);
  ui.resultsEmpty.hidden = state.total > 0;
  ui.resultsEmpty.textContent = state.with.length || state.without.length
    ? "No other photo passes these filters." : "No other photos in the collection yet.";
  ui.similarCount.textContent = state.total ? `${state.loaded} of ${state.total}` : "";
  ui.more.hidden = state.loaded >= state.total || page.results.length === 0;
}

export async function loadMore() {
  if (state.loading || !state.query) return;
  const generation = state.generation;
  state.loading = true;
  ui.more.disabled = true;
  ui.more.textContent = "Loading…";
  try {
    const page = await fetchSimilar(state.query, state.page + 1);
    if (generation !== state.generation) return;
    const firstNew = ui.results.children.length;
    appendResults(page);
    // Keep keyboard users where the new photos start.
    const target = ui.results.children[firstNew];
    if (target && document.activeElement === ui.more) target.querySelector("a").focus({ preventScroll: true });
  } catch (err) {
    notify(err.message, "error");
  } finally {
    state.loading = false;
    ui.more.disabled = false;
    ui.more.textContent = "More";
  }
}
