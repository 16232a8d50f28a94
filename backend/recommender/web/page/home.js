// The home view: random photos from the collection (and, via classes.js, browsing by object).
import { api } from "./api.js";
import { loadClasses } from "./classes.js";
import { el, show, ui } from "./dom.js";
import { waitUntilReady } from "./health.js";
import { linkTo } from "./results.js";
import { GRID_SIZE, state } from "./state.js";

export async function showHome() {
  state.generation += 1;
  state.query = null;
  state.search = null;
  ui.searchInput.value = "";
  document.title = "Discover similar photos";
  show("home");
  loadClasses();
  // Coming back (Back, the Home link) shows the photos seen before, as a browser restores a
  // page; replacing them under the reader's eyes would lose the one they meant to click.
  // Shuffle asks for others.
  if (ui.homeGrid.childElementCount) return;
  await loadHomeGrid();
}

export async function loadHomeGrid() {
  const generation = state.generation;
  ui.homeEmpty.hidden = true;
  try {
    const data = await api(`/random?n=${GRID_SIZE}`);
    if (generation !== state.generation) return;
    renderHomeGrid(data.images || []);
  } catch (err) {
    if (generation !== state.generation) return;
    ui.homeGrid.replaceChildren();
    ui.homeEmpty.hidden = false;
    ui.homeEmpty.textContent = err.status === 404
      ? "The collection is empty. Upload a photo to start it, or ask the operator to run “recommender ingest DIR”."
      : err.message;
    if (err.status === 503) waitUntilReady().then(() => { if (generation === state.generation) loadHomeGrid(); });
  }
}

function renderHomeGrid(images) {
  const template = el("tile-template");
  const items = images.map((image) => linkTo(template.content.firstElementChild.cloneNode(true), image));
  ui.homeGrid.replaceChildren(...items);
}
