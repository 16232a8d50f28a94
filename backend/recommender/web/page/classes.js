// The class names from /classes: the home view's "browse by object" list and the search
// box's suggestions as one types.
import { api } from "./api.js";
import { ui } from "./dom.js";
import { navigateSearch } from "./search.js";
import { searchUrl, state } from "./state.js";

export async function loadClasses() {
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

export function setUpSearchBox() {
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
