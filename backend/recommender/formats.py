"""The image formats the service accepts: one table, used by decoding, storage, naming and file discovery."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class ImageFormat:
    name: str  # Pillow's format name
    label: str  # how messages spell it
    mime: str
    extensions: tuple[str, ...]  # without the dot; the first is used on disk and for new names

    @property
    def extension(self) -> str:
        return self.extensions[0]


FORMATS = MappingProxyType(
    {
        f.name: f
        for f in (
            ImageFormat("JPEG", "JPEG", "image/jpeg", ("jpg", "jpeg", "jpe")),
            ImageFormat("PNG", "PNG", "image/png", ("png",)),
            ImageFormat("WEBP", "WebP", "image/webp", ("webp",)),
            ImageFormat("GIF", "GIF", "image/gif", ("gif",)),
            ImageFormat("BMP", "BMP", "image/bmp", ("bmp", "dib")),
            ImageFormat("TIFF", "TIFF", "image/tiff", ("tiff", "tif")),
        )
    }
)

# Inside folders, ingest picks up files with these suffixes (a file named directly is always tried).
FILE_SUFFIXES = frozenset(f".{ext}" for f in FORMATS.values() for ext in f.extensions)
FORMAT_LIST = ", ".join(f.label for f in list(FORMATS.values())[:-1]) + f" or {list(FORMATS.values())[-1].label}"


def image_format(name: str) -> ImageFormat:
    """The entry of a Pillow format name (any case); ValueError for one we do not accept."""
    try:
        return FORMATS[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported image format {name!r}") from None
