// Discovery page: plain JavaScript against the JSON API, no build step.
// State lives in the URL (/?q=<name>) so a query can be shared and the back button works.
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
  }

  async function showHome() {
    state.generation += 1;
    state.query = null;
    document.title = "Discover similar photos";
    show("home");
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
    const items = images.map((image) => {
      const node = template.content.firstElementChild.cloneNode(true);
      const link = node.querySelector("a");
      link.href = `/?q=${enc(image.name)}`;
      link.dataset.name = image.name;
      const img = node.querySelector("img");
      img.src = image.thumb_url || thumbUrl(image.name);
      img.alt = image.classes && image.classes.length ? `Photo with ${listSentence(image.classes)}` : `Photo ${image.name}`;
      return node;
    });
    ui.homeGrid.replaceChildren(...items);
  }

  async function showQuery(name, { upload = null } = {}) {
    state.generation += 1;
    const generation = state.generation;
    state.query = name;
    state.page = 0;
    state.total = 0;
    show("query");
    ui.results.replaceChildren();
    ui.resultsEmpty.hidden = true;
    ui.more.hidden = true;
    ui.similarCount.textContent = "";
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
    return api(`/get_similar/${enc(name)}?page=${page}&per_page=${state.perPage}`);
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
      li.append(swatch, label, score);
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

  function appendResults(page) {
    state.page = page.page;
    state.perPage = page.per_page;
    state.total = page.total;
    const template = el("result-template");
    const cards = page.results.map((result) => {
      const node = template.content.firstElementChild.cloneNode(true);
      const link = node.querySelector("a");
      link.href = `/?q=${enc(result.name)}`;
      link.dataset.name = result.name;
      const img = node.querySelector("img");
      img.src = result.thumb_url || thumbUrl(result.name);
      img.alt = result.classes && result.classes.length ? `Photo with ${listSentence(result.classes)}` : `Photo ${result.name}`;
      const chips = node.querySelector(".chips");
      const shared = new Set(result.shared_classes || []);
      const ordered = [...(result.shared_classes || []), ...(result.classes || []).filter((c) => !shared.has(c))];
      for (const cls of ordered.slice(0, 6)) {
        const chip = document.createElement("span");
        chip.className = shared.has(cls) ? "chip chip-shared" : "chip";
        if (shared.has(cls)) chip.style.setProperty("--hue", hue(cls));
        chip.textContent = cls;
        chips.append(chip);
      }
      node.querySelector(".why").textContent = whyLine(result);
      return node;
    });
    ui.results.append(...cards);
    const shown = ui.results.children.length;
    ui.resultsEmpty.hidden = state.total > 0;
    ui.similarCount.textContent = state.total ? `${shown} of ${state.total}` : "";
    ui.more.hidden = shown >= state.total || page.results.length === 0;
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
    if (name === state.query) return;
    history.pushState({ q: name }, "", `/?q=${enc(name)}`);
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

  function route() {
    const name = new URLSearchParams(location.search).get("q");
    if (name) showQuery(name);
    else showHome();
  }

  function onLinkClick(event) {
    const link = event.target.closest("a[data-name]");
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(link.dataset.name);
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
    setUploading(true);
    notify(`Looking for objects in “${file.name}”…`, "info", { sticky: true });
    try {
      const data = await api("/upload_file", { method: "POST", body: form });
      if (data.duplicate) notify("This photo is already in the collection; here it is.", "info");
      else clearNotice();
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
  }

  start();
})();
