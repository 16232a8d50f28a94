// Photo tiles and result cards: link and thumbnail, class chips, the why line, and the
// folded near-identical photos behind a card; shared by the home grid, a photo's similar
// photos and a search.
import { el } from "./dom.js";
import { thumbUrl } from "./api.js";
import { listSentence } from "./format.js";
import { hue } from "./hues.js";
import { photoUrl } from "./state.js";

// A tile or card's link and thumbnail for one photo.
export function linkTo(node, image) {
  const link = node.querySelector("a");
  link.href = photoUrl(image.name);
  link.dataset.name = image.name;
  const img = node.querySelector("img");
  img.src = image.thumb_url || thumbUrl(image.name);
  img.alt = image.classes && image.classes.length ? `Photo with ${listSentence(image.classes)}` : `Photo ${image.name}`;
  return node;
}

export function makeCard(result, highlighted, why) {
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
export function withFolded(node, folded, render) {
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

// How many photos a page of results holds, the folded ones included.
export const countWithFolded = (results) => results.reduce((n, r) => n + 1 + (r.near_duplicates || []).length, 0);

export function clearList(list, more, empty, count) {
  list.replaceChildren();
  more.hidden = true;
  empty.hidden = true;
  count.textContent = "";
}
