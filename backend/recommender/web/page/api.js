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

export async function api(path, options = {}) {
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

export const thumbUrl = (name) => `/images/${enc(name)}/thumb`;
