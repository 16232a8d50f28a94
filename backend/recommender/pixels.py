"""Pixels of any Pillow mode as upright 8-bit RGB, and reducing a large picture before that.

``to_rgb`` decides how each mode becomes RGB (16-bit and float grey scaled, transparency
composited on white); ``fit`` shrinks a loaded image to a longest side first, in the mode it
has, so that a big picture is never expanded to full-size RGB only to be thrown away.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_EXIF_ORIENTATION_TAG = 0x0112
# Modes Pillow resizes as they are, without losing what ``to_rgb`` needs (it premultiplies alpha).
_RESIZABLE = frozenset({"L", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I", "F", "I;16", "I;16L", "I;16B"})


def fit(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` (loaded) reduced so that its longer side is at most ``max_side``; as is if it fits.

    Modes that cannot be resized faithfully as they are (palettes, bilevel, colour-keyed
    transparency) become RGB(A) first; for a 16-bit colour key that means full-size RGB.
    """
    width, height = image.size
    scale = max_side / max(width, height)
    if scale >= 1.0:
        return image
    keyed = image.info.get("transparency") is not None
    if image.mode in ("P", "PA") or (keyed and image.mode in ("L", "RGB")):
        image = image.convert("RGBA" if keyed or image.mode == "PA" else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode not in _RESIZABLE or keyed:
        image = Image.fromarray(to_rgb(image))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap: an integer box reduction first, then Lanczos: near-identical quality for a
    # fraction of the work (and memory) on large pictures.
    reduced = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    reduced.info.pop("transparency", None)  # converted above where it mattered
    return reduced


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


def to_rgb(image: Image.Image) -> np.ndarray:
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


def exif_orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - broken EXIF must not cost the user the picture itself
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
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
