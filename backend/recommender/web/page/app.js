// Discovery page: plain JavaScript against the JSON API, no build step.
// State lives in the URL (/?q=<name>&with=dog&without=person, /?search=dog -person) so a view can
// be shared and the back button works.
"use strict";

(() => {
  const GRID_SIZE = 30;
  const DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024;

  const el = (id) => document.getElementById(id);
  const ui = {
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

  const state = {
    query: null,        // name of the photo shown as the query
    page: 0,            // last page of similar photos loaded
    perPage: 30,
    total: 0,
    loading: false,
    uploading: false,
    maxUploadBytes: DEFAULT_MAX_UPLOAD,
    generation: 0,      // bumps on every navigation so late answers of an old query are dropped
    with: [],           // classes every result must show (chips clicked once)
    without: [],        // classes no result may show (chips clicked twice)
    collapse: true,     // fold near-identical photos of a page into the best-ranked one
    loaded: 0,          // results loaded so far, folded ones included
    search: null,       // the object-name search shown, if any
    searchPage: 0,
    searchLoaded: 0,
    searchTotal: 0,
    classes: [],        // [{class, images}] from /classes, for autocomplete and browsing
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
    } catch (err) {
      throw new ApiError(0, "network", "The server cannot be reached. Check that it is running and try again.");
    }
    const type = response.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await response.json().catch(() => null) : null;
    if (!response.ok) {
      const error = (body && body.error) || {};
      throw new ApiError(response.status, error.code || `http_${response.status}`, friendlyMessage(response.status, error.message));
    }
    return body;
  }

  function friendlyMessage(status, message) {
    if (status === 503) return "The server is still starting (loading the detector and the index). Please try again in a few seconds.";
    if (status === 413) return message || `This file is too big: the limit is ${formatMB(state.maxUploadBytes)}.`;
    if (status === 415) return message || "This file is not an image we can read. Try a JPEG, PNG, WebP, GIF, BMP or TIFF photo.";
    if (status === 422) return message || "This image cannot be decoded; the file may be damaged.";
    if (status === 404) return message || "Nothing was found here.";
    if (status >= 500) return "Something went wrong on the server. Please try again.";
    return message || `The request failed (${status}).`;
  }

  const enc = encodeURIComponent;
  const thumbUrl = (name) => `/images/${enc(name)}/thumb`;

  // ---------------------------------------------------------------- feedback

  let noticeTimer = null;
  function notify(message, kind = "info", { sticky = false } = {}) {
    clearTimeout(noticeTimer);
    ui.noticeText.textContent = message;
    ui.notice.dataset.kind = kind;
    ui.notice.setAttribute("role", kind === "error" ? "alert" : "status");
    ui.notice.hidden = false;
    if (!sticky) noticeTimer = setTimeout(clearNotice, kind === "error" ? 9000 : 5000);
  }
  function clearNotice() {
    clearTimeout(noticeTimer);
    ui.notice.hidden = true;
  }

  function setBusy(busy) {
    ui.progress.hidden = !busy;
    document.body.classList.toggle("busy", busy);
    ui.main.setAttribute("aria-busy", busy ? "true" : "false");
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

  const formatMB = (bytes) => `${Math.round(bytes / (1024 * 1024))} MB`;
  const percent = (score) => `${Math.round(score * 100)}%`;

  // Each class of the query gets its own clearly different hue, in order of confidence; the
  // chips of the results reuse it, so a shared class has the same colour as its box.
  const PALETTE = [205, 22, 145, 330, 48, 265, 178, 0, 95, 295, 120, 235];
  const classHues = new Map();
  function hue(name) {
    if (!classHues.has(name)) {
      const used = classHues.size;
      classHues.set(name, used < PALETTE.length ? PALETTE[used] : (used * 137.508) % 360);
    }
    return classHues.get(name);
  }

  function listSentence(items) {
    if (items.length <= 1) return items.join("");
    return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
  }

  // ---------------------------------------------------------------- views

  function show(view) {
    ui.homeView.hidden = view !== "home";
    ui.queryView.hidden = view !== "query";
    ui.searchView.hidden = view !== "search";
  }

  async function showHome() {
    state.generation += 1;
    state.query = null;
    state.search = null;
    ui.searchInput.value = "";
    document.title = "Discover similar photos";
    show("home");
    loadClasses();
    await loadHomeGrid();
  }

  async function loadHomeGrid() {
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

  async function showQuery(name, { upload = null, withs = [], withouts = [] } = {}) {
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
      renderDetections(detections);
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

  function clearList(list, more, empty, count) {
    list.replaceChildren();
    more.hidden = true;
    empty.hidden = true;
    count.textContent = "";
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

  function applyFilters() {
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

  function queryUrl(name) {
    const params = new URLSearchParams({ q: name });
    if (state.with.length) params.set("with", state.with.join(","));
    if (state.without.length) params.set("without", state.without.join(","));
    if (!state.collapse) params.set("collapse", "0");
    return `/?${params}`;
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

  function renderDetections(data) {
    const detections = [...(data.detections || [])].sort((a, b) => b.score - a.score);
    classHues.clear();
    for (const d of detections) hue(d.class);
    const width = data.width;
    const height = data.height;
    const classes = [...new Set(detections.map((d) => d.class))];
    ui.queryMeta.textContent = `${width} × ${height} px · detector ${data.detector}`;
    ui.queryCaption.textContent = classes.length ? `Objects found: ${listSentence(classes)}.` : "No objects found.";
    ui.queryImage.alt = classes.length ? `The query photo, showing ${listSentence(classes)}` : "The query photo";
    ui.noObjects.hidden = detections.length > 0;

    // Boxes are placed in percentages of the original size, so they follow the displayed size.
    const boxes = detections.map((d) => {
      const [x1, y1, x2, y2] = d.box;
      const box = document.createElement("div");
      box.className = "box";
      box.dataset.class = d.class;
      box.style.setProperty("--hue", hue(d.class));
      box.style.left = `${(100 * x1) / width}%`;
      box.style.top = `${(100 * y1) / height}%`;
      box.style.width = `${(100 * (x2 - x1)) / width}%`;
      box.style.height = `${(100 * (y2 - y1)) / height}%`;
      const label = document.createElement("span");
      label.className = "box-label";
      label.textContent = `${d.class} ${percent(d.score)}`;
      // A box touching the top edge keeps its label inside, where it stays visible; one near
      // the right edge grows its label leftwards; tiny boxes show theirs only when their
      // class is pointed at in the list, so clusters of small objects stay readable.
      if (y1 / height < 0.06) label.classList.add("inside");
      if (x1 / width > 0.7) label.classList.add("right");
      if ((x2 - x1) / width < 0.08 && (y2 - y1) / height < 0.12) label.classList.add("compact");
      box.append(label);
      return box;
    });
    ui.boxes.replaceChildren(...boxes);

    // One entry per class: how many boxes and the best score.
    const summary = new Map();
    for (const d of detections) {
      const entry = summary.get(d.class) || { count: 0, score: 0 };
      entry.count += 1;
      entry.score = Math.max(entry.score, d.score);
      summary.set(d.class, entry);
    }
    const items = [...summary.entries()].map(([name, { count, score: best }]) => {
      const li = document.createElement("li");
      li.className = "object";
      li.style.setProperty("--hue", hue(name));
      li.tabIndex = 0;
      li.dataset.class = name;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.setAttribute("aria-hidden", "true");
      const label = document.createElement("span");
      label.className = "object-name";
      label.textContent = count > 1 ? `${name} × ${count}` : name;
      const score = document.createElement("span");
      score.className = "object-score";
      score.textContent = percent(best);
      const filter = document.createElement("span");
      filter.className = "object-filter";
      li.append(swatch, label, filter, score);
      li.setAttribute("role", "button");
      li.title = "Click: results must have it; again: must not have it; again: any";
      li.addEventListener("click", () => cycleFilter(name));
      li.addEventListener("keydown", (event) => {
        if (event.key !== "Enter" && event.key !== " ") return;
        event.preventDefault();
        cycleFilter(name);
      });
      const highlight = (on) => {
        for (const box of ui.boxes.children) {
          box.classList.toggle("dim", on && box.dataset.class !== name);
          box.classList.toggle("focus", on && box.dataset.class === name);
        }
      };
      li.addEventListener("mouseenter", () => highlight(true));
      li.addEventListener("mouseleave", () => highlight(false));
      li.addEventListener("focus", () => highlight(true));
      li.addEventListener("blur", () => highlight(false));
      return li;
    });
    ui.objects.replaceChildren(...items);
  }

  // A tile or card's link and thumbnail for one photo.
  function linkTo(node, image) {
    const link = node.querySelector("a");
    link.href = `/?q=${enc(image.name)}`;
    link.dataset.name = image.name;
    const img = node.querySelector("img");
    img.src = image.thumb_url || thumbUrl(image.name);
    img.alt = image.classes && image.classes.length ? `Photo with ${listSentence(image.classes)}` : `Photo ${image.name}`;
    return node;
  }

  function makeCard(result, highlighted, why) {
    const node = linkTo(el("result-template").content.firstElementChild.cloneNode(true), result);
    const chips = node.querySelector(".chips");
    const shared = new Set(highlighted);
    const ordered = [...highlighted, ...(result.classes || []).filter((c) => !shared.has(c))];
    for (const cls of ordered.slice(0, 6)) {
      const chip = document.createElement("span");
      chip.className = shared.has(cls) ? "chip chip-shared" : "chip";
      if (shared.has(cls)) chip.style.setProperty("--hue", hue(cls));
      chip.textContent = cls;
      chips.append(chip);
    }
    node.querySelector(".why").textContent = why;
    return node;
  }

  // A card whose near-identical photos were folded into it gets a button that shows them.
  function withFolded(node, folded, render) {
    if (!folded || !folded.length) return [node];
    const button = document.createElement("button");
    button.type = "button";
    button.className = "fold-button";
    const label = `+${folded.length} near-identical`;
    button.textContent = label;
    button.setAttribute("aria-expanded", "false");
    let shown = null;
    button.addEventListener("click", () => {
      if (!shown) {
        shown = folded.map((r) => {
          const card = render(r);
          card.classList.add("folded");
          return card;
        });
        node.after(...shown);
      } else {
        for (const card of shown) card.hidden = !card.hidden;
      }
      const open = !shown[0].hidden;
      button.setAttribute("aria-expanded", open ? "true" : "false");
      button.textContent = open ? `Hide ${folded.length} near-identical` : label;
    });
    node.append(button);
    return [node];
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
    state.loaded += page.results.reduce((n, r) => n + 1 + (r.near_duplicates || []).length, 0);
    ui.resultsEmpty.hidden = state.total > 0;
    ui.resultsEmpty.textContent = state.with.length || state.without.length
      ? "No other photo passes these filters." : "No other photos in the collection yet.";
    ui.similarCount.textContent = state.total ? `${state.loaded} of ${state.total}` : "";
    ui.more.hidden = state.loaded >= state.total || page.results.length === 0;
  }

  // The server's line weighs each shared class by its share of the similarity score.
  function whyLine(result) {
    if (result.contributions && result.contributions.length) return `Similar for ${result.why}`;
    return result.why || "Shares no object; closest by overall content";
  }

  async function loadMore() {
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

  // ---------------------------------------------------------------- navigation

  function navigate(name) {
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
  function rememberQuery(name) {
    const url = `/?q=${enc(name)}`;
    if (new URLSearchParams(location.search).get("q") === name) history.replaceState({ q: name }, "", url);
    else history.pushState({ q: name }, "", url);
  }

  function goHome(push = true) {
    if (push) history.pushState({}, "", "/");
    showHome();
  }

  const splitNames = (value) => (value || "").split(",").map((c) => c.trim()).filter(Boolean);

  function route() {
    const params = new URLSearchParams(location.search);
    state.collapse = params.get("collapse") !== "0";
    ui.collapseToggle.checked = state.collapse;
    const name = params.get("q");
    const search = params.get("search");
    if (name) showQuery(name, { withs: splitNames(params.get("with")), withouts: splitNames(params.get("without")) });
    else if (search) showSearch(search);
    else showHome();
  }

  function onLinkClick(event) {
    const link = event.target.closest("a[data-name], a[data-search]");
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    if (link.dataset.search) navigateSearch(link.dataset.search);
    else navigate(link.dataset.name);
  }

  async function openRandom() {
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

  // ---------------------------------------------------------------- upload

  async function uploadFile(file) {
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

  function setUpDragAndDrop() {
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

  // ---------------------------------------------------------------- search by object names

  const searchUrl = (text) => `/?${new URLSearchParams(state.collapse ? { search: text } : { search: text, collapse: "0" })}`;

  function navigateSearch(text) {
    const query = text.trim();
    if (!query) return;
    history.pushState({ search: query }, "", searchUrl(query));
    clearNotice();
    showSearch(query);
  }

  function showSearch(text) {
    state.query = null;
    state.search = text;
    ui.searchInput.value = text;
    ui.searchTitle.textContent = `Photos with ${text}`;
    document.title = `${text} · Discover`;
    show("search");
    window.scrollTo({ top: 0 });
    return loadSearchPage(true);
  }

  async function loadSearchPage(first) {
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
    classHues.clear();
    for (const c of page.with) hue(c);
    const render = (r) => {
      const scores = Object.entries(r.scores || {}).map(([c, v]) => `${c} ${percent(v)}`).join(" · ");
      const why = page.with.length ? `${scores} · ${percent(r.confidence)} sure of all` : named.join(", ");
      return makeCard(r, page.with, why);
    };
    ui.searchResults.append(...page.results.flatMap((r) => withFolded(render(r), r.near_duplicates, render)));
    state.searchPage = page.page;
    state.searchTotal = page.total;
    state.searchLoaded += page.results.reduce((n, r) => n + 1 + (r.near_duplicates || []).length, 0);
    ui.searchEmpty.hidden = page.total > 0;
    ui.searchEmpty.textContent = "No photo in the collection matches.";
    ui.searchCount.textContent = page.total ? `${state.searchLoaded} of ${page.total}` : "";
    ui.searchMore.hidden = state.searchLoaded >= page.total || page.results.length === 0;
  }

  // ---------------------------------------------------------------- class names: browse and autocomplete

  async function loadClasses() {
    try {
      const data = await api("/classes");
      state.classes = data.classes || [];
    } catch (err) {
      return;  // browsing is an extra: the page works without it
    }
    if (document.activeElement === ui.searchInput) suggest();
    const present = state.classes.filter((c) => c.images > 0);
    ui.browseHead.hidden = present.length === 0;
    ui.classBrowser.replaceChildren(...present.map((c) => {
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.href = searchUrl(c.class);
      link.dataset.search = c.class;
      link.className = "class-count";
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = c.images;
      link.append(c.class, " ", count);
      li.append(link);
      return li;
    }));
  }

  // The name being typed: the last one to three words before the caret, without a leading "-".
  function typedName(value) {
    if (!value || /\s$/.test(value)) return null;
    const words = value.split(/\s+/);
    for (let n = Math.min(3, words.length); n >= 1; n -= 1) {
      const span = words.slice(-n);
      if (n > 1 && span.slice(1).some((w) => w.startsWith("-"))) continue;
      const negative = span[0].startsWith("-");
      const text = span.join(" ").replace(/^-/, "").toLowerCase();
      if (!text) continue;
      const names = classNames().filter((c) => c.startsWith(text));
      if (names.length || n === 1) {
        const before = words.slice(0, words.length - n).join(" ");
        return { before: before ? `${before} ` : "", negative, text, names };
      }
    }
    return null;
  }

  function classNames() {
    return state.classes.map((c) => c.class);
  }

  function suggest() {
    const typed = typedName(ui.searchInput.value);
    let names = typed ? typed.names : [];
    if (typed && names.length < 8) names = names.concat(classNames().filter((c) => c.includes(typed.text) && !names.includes(c)));
    names = names.slice(0, 8);
    const counts = new Map(state.classes.map((c) => [c.class, c.images]));
    ui.suggestions.replaceChildren(...names.map((name, i) => {
      const li = document.createElement("li");
      li.id = `suggestion-${i}`;
      li.setAttribute("role", "option");
      li.dataset.class = name;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = `${counts.get(name) || 0} photos`;
      li.append(name, count);
      li.addEventListener("mousedown", (event) => {
        event.preventDefault();  // keep the focus in the box
        pickSuggestion(name);
      });
      return li;
    }));
    const open = names.length > 0;
    ui.suggestions.hidden = !open;
    ui.searchInput.setAttribute("aria-expanded", open ? "true" : "false");
    ui.searchInput.removeAttribute("aria-activedescendant");
  }

  function closeSuggestions() {
    ui.suggestions.hidden = true;
    ui.searchInput.setAttribute("aria-expanded", "false");
    ui.searchInput.removeAttribute("aria-activedescendant");
  }

  function pickSuggestion(name) {
    const typed = typedName(ui.searchInput.value);
    const before = typed ? typed.before : ui.searchInput.value;
    ui.searchInput.value = `${before}${typed && typed.negative ? "-" : ""}${name} `;
    ui.searchInput.focus();
    closeSuggestions();
  }

  function moveSuggestion(step) {
    const items = [...ui.suggestions.children];
    if (!items.length || ui.suggestions.hidden) return;
    const current = items.findIndex((li) => li.getAttribute("aria-selected") === "true");
    const next = (current + step + items.length) % items.length;
    items.forEach((li, i) => li.setAttribute("aria-selected", i === next ? "true" : "false"));
    ui.searchInput.setAttribute("aria-activedescendant", items[next].id);
  }

  function setUpSearchBox() {
    ui.searchInput.addEventListener("input", suggest);
    ui.searchInput.addEventListener("focus", () => { if (!state.classes.length) loadClasses(); });
    ui.searchInput.addEventListener("blur", closeSuggestions);
    ui.searchInput.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        moveSuggestion(event.key === "ArrowDown" ? 1 : -1);
      } else if (event.key === "Escape") {
        closeSuggestions();
      } else if (event.key === "Enter") {
        const active = ui.suggestions.querySelector("[aria-selected='true']");
        if (active && !ui.suggestions.hidden) {
          event.preventDefault();
          pickSuggestion(active.dataset.class);
        }
      }
    });
    ui.searchForm.addEventListener("submit", (event) => {
      event.preventDefault();
      closeSuggestions();
      navigateSearch(ui.searchInput.value);
    });
  }

  // ---------------------------------------------------------------- start-up

  async function readHealth() {
    const response = await fetch("/healthz", { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    return { ready: response.ok, body };
  }

  let readyPromise = null;
  function waitUntilReady() {
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

  function applyHealth(body) {
    if (body && body.max_upload_bytes) {
      state.maxUploadBytes = body.max_upload_bytes;
      ui.uploadHint.textContent = `JPEG, PNG, WebP, GIF, BMP or TIFF, up to ${formatMB(state.maxUploadBytes)}`;
    }
    if (body && body.page_size) state.perPage = body.page_size;
  }

  async function start() {
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
})();
