// The query photo's detections: its boxes drawn over the photo and the list of its objects.
import { ui } from "./dom.js";
import { listSentence, percent } from "./format.js";
import { hue, resetHues } from "./hues.js";

// onPick(name) runs when an object of the list is clicked or chosen with the keyboard.
export function renderDetections(data, onPick) {
  const detections = [...(data.detections || [])].sort((a, b) => b.score - a.score);
  resetHues(detections.map((d) => d.class));
  const width = data.width;
  const height = data.height;
  const classes = [...new Set(detections.map((d) => d.class))];
  ui.queryMeta.textContent = `${width} × ${height} px · detector ${data.detector}`;
  ui.queryCaption.textContent = classes.length ? `Objects found: ${listSentence(classes)}.` : "No objects found.";
  ui.queryImage.alt = classes.length ? `The query photo, showing ${listSentence(classes)}` : "The query photo";
  ui.noObjects.hidden = detections.length > 0;
  ui.boxes.replaceChildren(...detections.map((d) => drawBox(d, width, height)));
  ui.objects.replaceChildren(...[...summarise(detections)].map(([name, entry]) => objectItem(name, entry, onPick)));
}

// Boxes are placed in percentages of the original size, so they follow the displayed size.
function drawBox(d, width, height) {
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
}

// One entry per class: how many boxes and the best score.
function summarise(detections) {
  const summary = new Map();
  for (const d of detections) {
    const entry = summary.get(d.class) || { count: 0, score: 0 };
    entry.count += 1;
    entry.score = Math.max(entry.score, d.score);
    summary.set(d.class, entry);
  }
  return summary;
}

function objectItem(name, { count, score: best }, onPick) {
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
  li.addEventListener("click", () => onPick(name));
  li.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    event.preventDefault();
    onPick(name);
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
}
