"""Decode and validate untrusted image bytes into upright RGB pixels; make JPEG thumbnails.

Everything that reaches the detector passes through :func:`decode_image`, so this is the one
place that decides what counts as an image:

* the format is sniffed from the content (never from a file name) and Pillow is only allowed to
  use the matching plugin, so bytes cannot be routed to exotic parsers (EPS would run Ghostscript);
* dimensions are checked from the header *before* any pixel is decoded;
* every failure becomes an :class:`ImageError` subclass carrying an HTTP status, a stable code and
  a message a user can act on.

Nothing here mutates Pillow's module-level settings (``Image.MAX_IMAGE_PIXELS``, warning filters,
``ImageFile.LOAD_TRUNCATED_IMAGES``): limits are passed per call, so concurrent requests with
different limits cannot interfere. Pillow releases the GIL while decoding, so calling
:func:`decode_image` from several threads is both safe and useful.
"""

from __future__ import annotations

import io
import os
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

from .errors import UserError, error_kind
from .formats import FORMAT_LIST, FORMATS

__all__ = [
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
_EXIF_ORIENTATION_TAG = 0x0112


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
    """Upright pixels of one image: ``rgb`` is uint8 H×W×3, C-contiguous, EXIF orientation applied."""

    rgb: np.ndarray
    width: int
    height: int
    format: str
    mime: str


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


# --------------------------------------------------------------------------- conversion


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def _high_bit_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """Grey levels of an I;16*, I or F image scaled (not clipped) to 0..255."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        return _uint16_to_uint8(values.astype(np.uint32))
    if image.mode == "I":
        # Files decode to "I" from 16-bit sources (signed 16-bit or 32-bit TIFF, old PNG paths):
        # treat the 16-bit range as the scale when the data fit it, else stretch what is there.
        if values.size and values.min() >= 0 and values.max() <= 0xFFFF:
            return _uint16_to_uint8(values.astype(np.uint32))
        return _stretch(values.astype(np.float64))
    # "F": floats have no agreed white point. 0..1 is the usual convention for normalised data,
    # 0..255 Pillow's own; anything else is stretched so the picture stays visible.
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.rint(values).astype(np.uint8)
    return _stretch(values)


def _uint16_to_uint8(values: np.ndarray) -> np.ndarray:
    # 65535 / 257 == 255 exactly: the whole 16-bit range maps onto the whole 8-bit range.
    return ((values + 128) // 257).astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    # Transparent areas become white (what a browser shows on a plain page), not the arbitrary
    # colour hidden under alpha 0. uint16 suffices: rgb*a + 255*(255-a) + 127 <= 65152.
    rgb = rgba[:, :, :3].astype(np.uint16)
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    transparency = image.info.get("transparency")
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _high_bit_depth_to_uint8(image)
        if isinstance(transparency, int) and not isinstance(transparency, bool):
            # A tRNS grey key on a 16-bit PNG: that exact raw value is see-through.
            gray = np.where(np.asarray(image) == transparency, np.uint8(255), gray)
        return _gray_to_rgb(gray)
    if mode == "1":
        return _gray_to_rgb(np.asarray(image.convert("L")))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or transparency is not None:
        if mode == "La":  # premultiplied; Pillow converts it only via LA
            image = image.convert("LA")
        return _composite_on_white(np.asarray(image.convert("RGBA")))
    if mode == "L":
        return _gray_to_rgb(np.asarray(image))
    return np.asarray(image.convert("RGB"))


def _exif_orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - broken EXIF must not cost the user the picture itself
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into the upright picture described by EXIF orientation 1..8."""
    if orientation == 2:
        out = rgb[:, ::-1]
    elif orientation == 3:
        out = rgb[::-1, ::-1]
    elif orientation == 4:
        out = rgb[::-1]
    elif orientation == 5:
        out = rgb.transpose(1, 0, 2)
    elif orientation == 6:
        out = np.rot90(rgb, k=-1)
    elif orientation == 7:
        out = rgb[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:
        out = np.rot90(rgb, k=1)
    else:
        return np.ascontiguousarray(rgb)
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------- decoding


def decode_image(data: bytes, *, max_bytes: int | None = None, max_pixels: int = _DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Validate ``data`` and decode its first frame into upright RGB pixels.

    Raises :class:`FileTooLargeError`, :class:`NotAnImageError`, :class:`ImageTooLargeError`
    or :class:`CorruptImageError`; the limit checks happen before any pixel is decoded.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
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
            image.load()
            # A GIF's first frame may reach beyond its declared screen; Pillow grows the canvas.
            _check_dimensions(image.width, image.height, label, limit)
            orientation = _exif_orientation(image)
            rgb = _to_rgb(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"The image is too large to decode safely ({exc}).") from exc
    except Image.DecompressionBombWarning as exc:  # only raised when warnings are errors
        raise ImageTooLargeError(f"The image is too large to decode safely ({exc}).") from exc
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure on untrusted bytes is the file's fault
        raise _error_from_pillow(data, fmt, label, exc) from exc

    rgb = _apply_orientation(rgb, orientation)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise CorruptImageError(f"The {label} image decoded to an unexpected pixel layout {rgb.shape}.")
    height, width = rgb.shape[:2]
    return DecodedImage(rgb=rgb, width=int(width), height=int(height), format=fmt, mime=FORMATS[fmt].mime)


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
    path: str | os.PathLike[str], *, max_bytes: int | None = None, max_pixels: int = _DEFAULT_MAX_PIXELS
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
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)


# --------------------------------------------------------------------------- thumbnails


def thumbnail_jpeg(rgb: np.ndarray, max_side: int = 320, quality: int = 85) -> bytes:
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
