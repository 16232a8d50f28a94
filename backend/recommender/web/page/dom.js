// The page's elements, looked up once (index.html is parsed before a module script runs), and
// which of its three views is shown.

export const el = (id) => document.getElementById(id);

export const ui = {
  homeView: el("home-view"),
  homeGrid: el("home-grid"),
  homeEmpty: el("home-empty"),
  queryView: el("query-view"),
  queryImage: el("query-image"),
  photoFrame: el("photo-frame"),
  boxes: el("boxes"),
  queryTitle: el("query-title"),
  queryMeta: el("query-meta"),
  queryCaption: el("query-caption"),
  objects: el("objects"),
  noObjects: el("no-objects"),
  showBoxes: el("show-boxes"),
  results: el("results"),
  resultsEmpty: el("results-empty"),
  similarCount: el("similar-count"),
  more: el("more-button"),
  random: el("random-button"),
  shuffle: el("shuffle-button"),
  upload: el("upload-button"),
  uploadLabel: el("upload-button").querySelector(".label"),
  dropzone: el("dropzone"),
  uploadHint: el("upload-hint"),
  fileInput: el("file-input"),
  progress: el("progress"),
  notice: el("notice"),
  noticeText: el("notice-text"),
  noticeClose: el("notice-close"),
  dropOverlay: el("drop-overlay"),
  main: el("main"),
  homeLink: el("home-link"),
  searchForm: el("search-form"),
  searchInput: el("search-input"),
  suggestions: el("suggestions"),
  searchView: el("search-view"),
  searchTitle: el("search-title"),
  searchCount: el("search-count"),
  searchResults: el("search-results"),
  searchEmpty: el("search-empty"),
  searchMore: el("search-more"),
  browseHead: el("browse-head"),
  classBrowser: el("class-browser"),
  filters: el("filters"),
  filtersText: el("filters-text"),
  filtersClear: el("filters-clear"),
  collapseToggle: el("collapse-toggle"),
};

export function show(view) {
  ui.homeView.hidden = view !== "home";
  ui.queryView.hidden = view !== "query";
  ui.searchView.hidden = view !== "search";
}
