// What the page shows, and its form in the URL (/?q=<name>&with=dog&without=person,
// /?search=dog -person) so a view can be shared and the back button works.
import { enc } from "./format.js";

export const GRID_SIZE = 30;
const DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024;

export const state = {
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

// A photo's own page, without filters.
export const photoUrl = (name) => `/?q=${enc(name)}`;

// The query photo's page with the filters and folding now chosen.
export function queryUrl(name) {
  const params = new URLSearchParams({ q: name });
  if (state.with.length) params.set("with", state.with.join(","));
  if (state.without.length) params.set("without", state.without.join(","));
  if (!state.collapse) params.set("collapse", "0");
  return `/?${params}`;
}

export const searchUrl = (text) => `/?${new URLSearchParams(state.collapse ? { search: text } : { search: text, collapse: "0" })}`;

export const splitNames = (value) => (value || "").split(",").map((c) => c.trim()).filter(Boolean);
