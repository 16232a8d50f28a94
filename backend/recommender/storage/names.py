"""Public image names: derived from the client's file name, safe in URLs and on any filesystem."""

from __future__ import annotations

import re

from ..formats import FORMATS, image_format

MAX_STEM = 100  # leaves room for a hash suffix and an extension inside the 255-character column
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def base_name(hint: str | None, fmt: str, sha256: str) -> str:
    """A safe name from a client file name; the extension always matches the real format.

    ``000000000139.jpg`` stays as it is. Characters outside [A-Za-z0-9._-] become ``_``,
    directories are dropped, the stem is bounded, an image extension of another format is
    replaced (``photo.png`` holding JPEG bytes becomes ``photo.jpg``), and a missing or
    unrelated extension gets the canonical one appended.
    """
    accepted = image_format(fmt).extensions
    canonical = accepted[0]
    raw = (hint or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = raw.rpartition(".")
    ext = ext.lower()
    if not (dot and stem):
        stem, ext = raw, canonical
    elif ext not in accepted:
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
    return any(ext in f.extensions for f in FORMATS.values())


def is_plausible_name(name: str) -> bool:
    """Whether ``name`` could name an image at all; anything else is not found, without a query.

    Names this module makes are 1-255 characters of [A-Za-z0-9._-]; older or imported ones
    may hold other printable characters, so only what no name can contain is refused: control
    characters (NUL among them, which PostgreSQL text cannot even hold) and excess length.
    """
    return 0 < len(name) <= 255 and not any(ord(ch) < 32 or ord(ch) == 127 for ch in name)
