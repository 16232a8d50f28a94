// The search view: photos that show the object names typed (/?search=dog -person), most
// confident first, page by page.
import { api } from "./api.js";
import { show, ui } from "./dom.js";
import { clearNotice, notify, setBusy } from "./feedback.js";
import { listSentence, percent } from "./format.js";
import { resetHues } from "./hues.js";
import { clearList, countWithFolded, makeCard, withFolded } from "./results.js";
import { searchUrl, state } from "./state.js";

export function navigateSearch(text) {
  const query = text.trim();
  if (!query) return;
  history.pushState({ search: query }, "", searchUrl(query));
  clearNotice();
  showSearch(query);
}

export function showSearch(text) {
  state.query = null;
  state.search = text;
  ui.searchInput.value = text;
  ui.searchTitle.textContent = `Photos with ${text}`;
  document.title = `${text} · Discover`;
  show("search");
  window.scrollTo({ top: 0 });
  return loadSearchPage(true);
}

export async function loadSearchPage(first) {
  if (first) {
    state.generation += 1;
    state.searchPage = 0;
    state.searchLoaded = 0;
    clearList(ui.searchResults, ui.searchMore, ui.searchEmpty, ui.searchCount);
  }
  const generation = state.generation;
  const params = new URLSearchParams({ q: state.search, page: state.searchPage + 1, per_page: state.perPage,
    collapse: state.collapse ? 1 : 0 });
  setBusy(true);
  ui.searchMore.disabled = true;
  try {
    const page = await api(`/search?${params}`);
    if (generation !== state.generation) return;
    renderSearchPage(page);
  } catch (err) {
    if (generation !== state.generation) return;
    notify(err.message, "error");
    if (first) {
      ui.searchEmpty.hidden = false;
      ui.searchEmpty.textContent = err.message;
    }
  } finally {
    ui.searchMore.disabled = false;
    if (generation === state.generation) setBusy(false);
  }
}

function renderSearchPage(page) {
  const named = [...page.with.map((c) => c), ...page.without.map((c) => `no ${c}`)];
  ui.searchTitle.textContent = page.with.length
    ? `Photos with ${listSentence(page.with)}${page.without.length ? `, without ${listSentence(page.without)}` : ""}`
    : `Photos without ${listSentence(page.without)}`;
  resetHues(page.with);
  const render = (r) => {
    const scores = Object.entries(r.scores || {}).map(([c, v]) => `${c} ${percent(v)}`).join(" · ");
    const why = page.with.length ? `${scores} · ${percent(r.confidence)} sure of all` : named.join(", ");
    return makeCard(r, page.with, why);
  };
  ui.searchResults.append(...page.results.flatMap((r) => withFolded(render(r), r.near_duplicates, render)));
  state.searchPage = page.page;
  state.searchTotal = page.total;
  state.searchLoaded += countWithFolded(page.results);
  ui.searchEmpty.hidden = page.total > 0;
  ui.searchEmpty.textContent = "No photo in the collection matches.";
  ui.searchCount.textContent = page.total ? `${state.searchLoaded} of ${page.total}` : "";
  ui.searchMore.hidden = state.searchLoaded >= page.total || page.results.length === 0;
}
