"""Decode and validate untrusted image bytes into upright RGB pixels; make JPEG thumbnails.

Everything that reaches the detector passes through :func:`decode_image`, so this is the one
place that decides what counts as an image:

* the format is sniffed from the content (never from a file name) and Pillow is only allowed to
  use the matching plugin, so bytes cannot be routed to exotic parsers (EPS would run Ghostscript);
* dimensions are checked from the header *before* any pixel is decoded;
* every failure becomes an :class:`ImageError` subclass carrying an HTTP status, a stable code and
  a message a user can act on;
* memory is bounded: callers that need no more than ``max_side`` pixels get the picture reduced
  while it is decoded (JPEG decodes at 1/2, 1/4 or 1/8 scale directly, other formats are reduced
  before they become RGB), and every decode holds its pixels in a process-wide budget
  (:data:`DECODE_BUDGET`), so a burst of small files that decode to huge pictures waits its turn.

Nothing here mutates Pillow's module-level settings (``Image.MAX_IMAGE_PIXELS``, warning filters,
``ImageFile.LOAD_TRUNCATED_IMAGES``): limits are passed per call, so concurrent requests with
different limits cannot interfere. Pillow releases the GIL while decoding, so calling
:func:`decode_image` from several threads is both safe and useful.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import struct
from dataclasses import dataclass

import numpy as np

# Importing the plugins registers them up front; otherwise Pillow registers plugins lazily on the
# first open, which would happen inside request threads.
from PIL import (  # noqa: F401  (imported for their registration side effect)
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from .budget import PixelBudget
from .errors import UserError, error_kind
from .formats import FORMAT_LIST, FORMATS
from .pixels import apply_orientation, exif_orientation, fit, to_rgb

__all__ = [
    "DECODE_BUDGET",
    "THUMBNAIL_SIDE",
    "WORKING_SIDE",
    "CorruptImageError",
    "DecodedImage",
    "FileTooLargeError",
    "ImageError",
    "ImageTooLargeError",
    "NotAnImageError",
    "decode_image",
    "read_image_file",
    "sniff_format",
    "thumbnail_jpeg",
]

_DEFAULT_MAX_PIXELS = 50_000_000
# Pixels decoded at once by all threads of a process. A bit more than one picture at the pixel
# limit, so one of those (a 49 MP PNG holds 49-200 MB while decoding) runs with ordinary photos
# beside it, and two never do. Measured with bench/memory.py.
DECODE_BUDGET = PixelBudget(64_000_000)
# The longest side the service works on (detection, thumbnails): above every detector's input
# (YOLOv5s 640, Mask R-CNN 1024), so detection sees what it would have seen at full size; and
# low enough that a 12 MP photo (4000×3000) decodes at half scale in the JPEG decoder.
WORKING_SIDE = 1600
THUMBNAIL_SIDE = 320


class ImageError(UserError, ValueError):
    """Bytes that cannot be used as an image."""

    code = "invalid_image"
    status = 400


NotAnImageError = error_kind(
    "NotAnImageError", "unsupported_media_type", 415, "Not in one of the supported image formats.", ImageError
)
CorruptImageError = error_kind(
    "CorruptImageError", "undecodable_image", 422, "Starts like a supported image but cannot be decoded.", ImageError
)
ImageTooLargeError = error_kind(
    "ImageTooLargeError", "image_too_large", 422, "More pixels than allowed (perhaps a decompression bomb).", ImageError
)
FileTooLargeError = error_kind("FileTooLargeError", "payload_too_large", 413, "More bytes than allowed.", ImageError)


@dataclass(frozen=True)
class DecodedImage:
    """Upright pixels of one image: ``rgb`` is uint8 H×W×3, C-contiguous, EXIF orientation applied.

    ``width`` and ``height`` are the picture's upright size as stored in the file; ``rgb`` has
    that size too unless the caller asked for a reduced decode (``max_side``), in which case
    ``scale`` maps its pixel coordinates back to the original's.
    """

    rgb: np.ndarray
    width: int
    height: int
    format: str
    mime: str

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factors from ``rgb`` pixels to the original's; (1.0, 1.0) when not reduced."""
        return self.width / self.rgb.shape[1], self.height / self.rgb.shape[0]


# --------------------------------------------------------------------------- sniffing

# Only the fixed-size part of a BMP's second header says "this really is a BMP"; "BM" alone is
# two ASCII letters that plenty of text files start with.
_BMP_DIB_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})

# Formats people commonly try to upload that we do not decode: naming them makes the 415 useful.
_KNOWN_UNSUPPORTED: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftyphevc", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypmsf1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"%PDF", "PDF"),
    (0, b"<svg", "SVG"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"PK\x03\x04", "ZIP"),
)


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name of ``data`` judged from its leading bytes, or None if unsupported."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in _BMP_DIB_HEADER_SIZES:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic and BigTIFF
        return "TIFF"
    return None


def _describe_unsupported(data: bytes) -> str:
    head = bytes(data[:32])
    stripped = head.lstrip()
    for offset, magic, name in _KNOWN_UNSUPPORTED:
        if head[offset : offset + len(magic)] == magic or (name == "SVG" and stripped.startswith(b"<?xml")):
            article = "an" if name in ("SVG", "AVIF") else "a"  # by sound: "an SVG", "a PDF"
            return f"This is {article} {name} file, which is not supported; please upload a {FORMAT_LIST} image."
    return f"The file is not a supported image; please upload a {FORMAT_LIST} image."


# --------------------------------------------------------------------------- limits


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}".replace(".0 ", " ")
    raise AssertionError("unreachable")


def _check_byte_size(size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise FileTooLargeError(f"The file is {_human_bytes(size)}; the limit is {_human_bytes(max_bytes)}.")


def _effective_pixel_limit(max_pixels: int) -> int:
    # Pillow warns above its own global limit (and refuses at twice that). Reading it -- never
    # writing it -- lets us turn that warning zone into a clean refusal in every thread.
    pillow_limit = Image.MAX_IMAGE_PIXELS
    return min(max_pixels, pillow_limit) if pillow_limit else max_pixels


def _check_dimensions(width: int, height: int, fmt: str, limit: int) -> None:
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"The {fmt} image has no pixels (its header says {width}×{height}).")
    pixels = width * height
    if pixels > limit:
        raise ImageTooLargeError(
            f"The image is {width}×{height} pixels ({pixels:,} pixels); the limit is {limit:,} pixels."
        )


# --------------------------------------------------------------------------- decoding


def decode_image(
    data: bytes,
    *,
    max_bytes: int | None = None,
    max_pixels: int = _DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    budget: PixelBudget | None = DECODE_BUDGET,
) -> DecodedImage:
    """Validate ``data`` and decode its first frame into upright RGB pixels.

    With ``max_side`` the pixels are reduced (while decoding where the format allows) so that
    the longer side is at most that; ``width``/``height`` stay the original's. Raises
    :class:`FileTooLargeError`, :class:`NotAnImageError`, :class:`ImageTooLargeError` or
    :class:`CorruptImageError`; the limit checks happen before any pixel is decoded.
    """
    if max_pixels < 1 or (max_side is not None and max_side < 1):
        raise ValueError(f"max_pixels and max_side must be positive, got {max_pixels} and {max_side}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image needs bytes, got {type(data).__name__}")
    data = bytes(data)
    _check_byte_size(len(data), max_bytes)
    if not data:
        raise NotAnImageError("The file is empty.")
    fmt = sniff_format(data)
    if fmt is None:
        raise NotAnImageError(_describe_unsupported(data))
    limit = _effective_pixel_limit(max_pixels)
    label = FORMATS[fmt].label

    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            _check_dimensions(image.width, image.height, label, limit)
            stored = image.size
            drafted = max_side is not None and fmt == "JPEG" and _draft(image, max_side)
            with budget.hold(image.width * image.height) if budget else contextlib.nullcontext():
                image.load()
                # A GIF's first frame may reach beyond its declared screen; Pillow grows the canvas.
                _check_dimensions(image.width, image.height, label, limit)
                stored = stored if drafted else image.size
                orientation = exif_orientation(image)
                rgb = to_rgb(fit(image, max_side) if max_side is not None else image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning only when warnings are errors
        raise _too_many_pixels(data, fmt, label, limit, exc) from exc
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure on untrusted bytes is the file's fault
        raise _error_from_pillow(data, fmt, label, exc) from exc

    rgb = apply_orientation(rgb, orientation)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise CorruptImageError(f"The {label} image decoded to an unexpected pixel layout {rgb.shape}.")
    width, height = stored if orientation < 5 else stored[::-1]  # 5-8 turn the picture a quarter
    return DecodedImage(rgb=rgb, width=int(width), height=int(height), format=fmt, mime=FORMATS[fmt].mime)


def _draft(image: Image.Image, max_side: int) -> bool:
    """Let the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding, staying at least ``max_side``."""
    scale = max_side / max(image.size)
    if scale >= 1.0:
        return False
    image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    return True


def _too_many_pixels(data: bytes, fmt: str, label: str, limit: int, exc: Exception) -> ImageError:
    """Pillow refuses beyond twice its own limit before we see the size: say it our way."""
    dims = _header_dimensions(data, fmt)
    if dims is not None and dims[0] > 0 and dims[1] > 0:
        try:
            _check_dimensions(dims[0], dims[1], label, limit)
        except ImageTooLargeError as ours:
            return ours
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found:
        return ImageTooLargeError(f"The image has {int(found.group(1)):,} pixels; the limit is {limit:,} pixels.")
    return ImageTooLargeError(f"The image has more pixels than the limit of {limit:,} pixels.")


def _error_from_pillow(data: bytes, fmt: str, label: str, exc: Exception) -> ImageError:
    """Translate a Pillow failure into the error a user can act on."""
    text = str(exc).lower()
    if "decompressed data too large" in text or "too much memory used in text chunks" in text:
        # A compressed text/ICC chunk that inflates to megabytes: a decompression bomb too.
        return ImageTooLargeError(f"The {label} image carries oversized compressed metadata and was refused.")
    dims = _header_dimensions(data, fmt)
    if dims is not None and (dims[0] <= 0 or dims[1] <= 0):
        return CorruptImageError(f"The {label} image has no pixels (its header says {dims[0]}×{dims[1]}).")
    if "truncated" in text or isinstance(exc, EOFError):
        return CorruptImageError(f"The {label} image is truncated: the file is incomplete. Please upload the complete file.")
    return CorruptImageError(f"The file looks like a {label} image but cannot be decoded; it may be damaged.")


def _header_dimensions(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height from fixed header offsets, for explaining refusals (None if unknown)."""
    try:
        if fmt == "PNG" and data[12:16] == b"IHDR":
            return struct.unpack_from(">II", data, 16)
        if fmt == "GIF":
            return struct.unpack_from("<HH", data, 6)
        if fmt == "BMP":
            if struct.unpack_from("<I", data, 14)[0] == 12:
                return struct.unpack_from("<HH", data, 18)
            width, height = struct.unpack_from("<ii", data, 18)
            return width, abs(height)  # negative height only means "stored top-down"
    except struct.error:
        return None
    return None


def read_image_file(
    path: str | os.PathLike[str],
    *,
    max_bytes: int | None = None,
    max_pixels: int = _DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
) -> DecodedImage:
    """Read a file and :func:`decode_image` it. Unreadable files raise OSError as usual.

    With ``max_bytes`` set, an oversized file is refused from its size, without reading it.
    """
    with open(path, "rb") as handle:
        if max_bytes is not None:
            _check_byte_size(os.fstat(handle.fileno()).st_size, max_bytes)
            # One byte over the limit is enough to know a file that grew meanwhile is too large.
            data = handle.read(max_bytes + 1)
        else:
            data = handle.read()
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side)


# --------------------------------------------------------------------------- thumbnails


def thumbnail_jpeg(rgb: np.ndarray, max_side: int = THUMBNAIL_SIDE, quality: int = 85) -> bytes:
    """A JPEG whose longer side is at most ``max_side`` (never enlarged), aspect ratio kept."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("thumbnail_jpeg needs a uint8 array of shape H×W×3")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError("thumbnail_jpeg needs a non-empty image")
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    if not 1 <= quality <= 95:
        raise ValueError(f"quality must be between 1 and 95, got {quality}")
    height, width = rgb.shape[:2]
    image = Image.fromarray(np.ascontiguousarray(rgb))
    scale = max_side / max(width, height)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # reducing_gap first shrinks by an integer factor cheaply, then resamples with Lanczos:
        # near-identical quality at a fraction of the cost on large photos.
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


# Checked once at import: a Pillow built without one of these codecs should fail loudly here,
# not as a puzzling "cannot decode" on the first WebP upload.
_missing = [name for name in FORMATS if name not in Image.OPEN]
if _missing:  # pragma: no cover - depends on how Pillow was built
    raise ImportError(f"Pillow was built without support for {', '.join(_missing)}; reinstall Pillow with those codecs")
