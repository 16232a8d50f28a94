// Text for people: sizes, percentages, lists of names; and the one URL-escaping helper.

export const enc = encodeURIComponent;

export const formatMB = (bytes) => `${Math.round(bytes / (1024 * 1024))} MB`;
export const percent = (score) => `${Math.round(score * 100)}%`;

export function listSentence(items) {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}
