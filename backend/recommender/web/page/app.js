// Discovery page: plain JavaScript modules against the JSON API, no build step. This entry
// wires the controls to the modules and starts the page once the server is ready.
import { ui } from "./dom.js";
import { clearNotice, notify } from "./feedback.js";
import { applyHealth, readHealth, waitUntilReady } from "./health.js";
import { loadClasses, setUpSearchBox } from "./classes.js";
import { loadHomeGrid } from "./home.js";
import { goHome, onLinkClick, openRandom, route } from "./navigation.js";
import { applyFilters, loadMore } from "./query.js";
import { loadSearchPage } from "./search.js";
import { searchUrl, state } from "./state.js";
import { setUpDragAndDrop, uploadFile } from "./upload.js";

function wireControls() {
  ui.random.addEventListener("click", openRandom);
  ui.shuffle.addEventListener("click", loadHomeGrid);
  ui.upload.addEventListener("click", () => ui.fileInput.click());
  ui.dropzone.addEventListener("click", () => ui.fileInput.click());
  ui.fileInput.addEventListener("change", () => uploadFile(ui.fileInput.files[0]));
  ui.more.addEventListener("click", loadMore);
  ui.searchMore.addEventListener("click", () => loadSearchPage(false));
  ui.filtersClear.addEventListener("click", () => {
    state.with = [];
    state.without = [];
    applyFilters();
  });
  ui.collapseToggle.addEventListener("change", () => {
    state.collapse = ui.collapseToggle.checked;
    if (state.query) applyFilters();
    else if (state.search) {
      history.replaceState({}, "", searchUrl(state.search));
      loadSearchPage(true);
    }
  });
  setUpSearchBox();
  ui.noticeClose.addEventListener("click", clearNotice);
  ui.showBoxes.addEventListener("change", () => { ui.boxes.hidden = !ui.showBoxes.checked; });
  ui.homeLink.addEventListener("click", (event) => {
    if (event.button !== 0 || event.metaKey || event.ctrlKey) return;
    event.preventDefault();
    goHome();
  });
  document.addEventListener("click", onLinkClick);
  window.addEventListener("popstate", route);
  setUpDragAndDrop();
  ui.queryImage.addEventListener("error", () => {
    if (state.query) notify(`The photo “${state.query}” could not be loaded.`, "error");
  });
}

async function start() {
  wireControls();
  try {
    const { ready, body } = await readHealth();
    if (ready) applyHealth(body);
    else await waitUntilReady();
  } catch (err) {
    await waitUntilReady();
  }
  route();
  if (!state.classes.length) loadClasses();  // names and counts for the search box's suggestions
}

start();
