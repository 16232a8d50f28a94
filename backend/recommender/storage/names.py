"""Public image names: derived from the client's file name, safe in URLs and on any filesystem."""

from __future__ import annotations

import re

from .media import EXTENSIONS

MAX_STEM = 100  # leaves room for a hash suffix and an extension inside the 255-character column
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# Extensions a client may already use for each format; anything else gets the canonical one.
_ACCEPTED_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "JPEG": ("jpg", "jpeg", "jpe"),
    "PNG": ("png",),
    "WEBP": ("webp",),
    "GIF": ("gif",),
    "BMP": ("bmp", "dib"),
    "TIFF": ("tif", "tiff"),
}


def base_name(hint: str | None, fmt: str, sha256: str) -> str:
    """A safe name from a client file name; the extension always matches the real format.

    ``000000000139.jpg`` stays as it is. Characters outside [A-Za-z0-9._-] become ``_``,
    directories are dropped, the stem is bounded, an image extension of another format is
    replaced (``photo.png`` holding JPEG bytes becomes ``photo.jpg``), and a missing or
    unrelated extension gets the canonical one appended.
    """
    fmt = fmt.upper()
    canonical = EXTENSIONS[fmt]
    raw = (hint or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = raw.rpartition(".")
    ext = ext.lower()
    if not (dot and stem):
        stem, ext = raw, canonical
    elif ext not in _ACCEPTED_EXTENSIONS.get(fmt, (canonical,)):
        if not _is_image_extension(ext):
            stem = raw  # "scan.final" is part of the name, not a format claim
        ext = canonical
    stem = _UNSAFE.sub("_", stem).strip("._-")[:MAX_STEM].rstrip("._-")
    if not stem:
        stem = f"image-{sha256[:12]}"
    return f"{stem}.{ext}"


def with_suffix(name: str, sha256: str, length: int = 8) -> str:
    """The collision variant of ``name``: a short content hash before the extension."""
    stem, _, ext = name.rpartition(".")
    return f"{stem}-{sha256[:length]}.{ext}"


def _is_image_extension(ext: str) -> bool:
    return any(ext in exts for exts in _ACCEPTED_EXTENSIONS.values())
