// Calls to the JSON API: one error type whose message a person can read.
import { enc, formatMB } from "./format.js";
import { state } from "./state.js";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// A server with several worker processes may send a request to one that is still loading
// while another already answered /healthz; such a worker did nothing, so asking again after
// its Retry-After is safe, even for an upload.
const LOADING_RETRIES = 5;

export async function api(path, options = {}) {
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
    } catch (err) {
      throw new ApiError(0, "network", "The server cannot be reached. Check that it is running and try again.");
    }
    const type = response.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await response.json().catch(() => null) : null;
    if (response.ok) return body;
    const error = (body && body.error) || {};
    if (error.code === "loading" && attempt < LOADING_RETRIES) {
      const seconds = Math.min(5, Number(response.headers.get("Retry-After")) || 1);
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
      continue;
    }
    throw new ApiError(response.status, error.code || `http_${response.status}`, friendlyMessage(response.status, error.message));
  }
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

export const thumbUrl = (name) => `/images/${enc(name)}/thumb`;
