"""What a user of the service sees when a file is (or is not) a usable image.

Every image here is generated in the test with Pillow (or is a real coco_dev photo), so each
expected pixel value is known exactly.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recommender.formats import FORMATS
from recommender.images import (
    CorruptImageError,
    DecodedImage,
    FileTooLargeError,
    ImageError,
    ImageTooLargeError,
    NotAnImageError,
    decode_image,
    read_image_file,
    sniff_format,
    thumbnail_jpeg,
)

RED = (220, 30, 40)
GREEN = (20, 200, 60)
BLUE = (30, 40, 210)
YELLOW = (240, 220, 20)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def solid(mode: str, color: object, size: tuple[int, int] = (24, 16)) -> Image.Image:
    return Image.new(mode, size, color)


def assert_uniform(decoded: DecodedImage, expected: tuple[int, int, int], tolerance: int = 0) -> None:
    diff = np.abs(decoded.rgb.astype(int) - np.array(expected)).max()
    assert diff <= tolerance, f"expected every pixel ≈ {expected}, got e.g. {decoded.rgb[0, 0].tolist()}"


def png_with_header(width: int, height: int, extra_chunks: bytes = b"") -> bytes:
    """A syntactically valid PNG start whose IHDR claims any size, with an empty image stream."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + extra_chunks
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def coco_photo(coco_dev_dir: Path) -> Path:
    # 000000000139.jpg is 640×426 according to COCO's public val2017 annotations.
    path = coco_dev_dir / "images" / "000000000139.jpg"
    if not path.is_file():
        pytest.fail(f"{path} is missing from coco_dev")
    return path


# ----------------------------------------------------------------------------- refusals


def assert_refused(exc_info: pytest.ExceptionInfo[ImageError], cls: type, code: str, status: int) -> str:
    exc = exc_info.value
    assert type(exc) is cls
    assert isinstance(exc, ValueError)
    assert (exc.code, exc.status) == (code, status)
    message = str(exc)
    assert message and "Traceback" not in message and "0x" not in message
    return message


def test_empty_bytes_are_not_an_image() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(b"")
    message = assert_refused(info, NotAnImageError, "unsupported_media_type", 415)
    assert "empty" in message


@pytest.mark.parametrize(
    "data",
    [b"hello world, this is a text file\n", b"\x00" * 64, b"BM is also how this text starts", b"GIF8", b"\xff\xd8"],
    ids=["text", "zeros", "text-starting-BM", "short-gif-magic", "short-jpeg-magic"],
)
def test_non_images_are_refused_with_the_supported_formats_listed(data: bytes) -> None:
    with pytest.raises(ImageError) as info:
        decode_image(data)
    message = assert_refused(info, NotAnImageError, "unsupported_media_type", 415)
    for name in ("JPEG", "PNG", "WebP", "GIF", "BMP", "TIFF"):
        assert name in message


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "AVIF"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "PDF"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    ],
)
def test_common_unsupported_formats_are_named(data: bytes, named: str) -> None:
    with pytest.raises(NotAnImageError) as info:
        decode_image(data)
    assert named in str(info.value)


def test_truncated_jpeg_photo_is_corrupt(coco_photo: Path) -> None:
    data = coco_photo.read_bytes()
    with pytest.raises(ImageError) as info:
        decode_image(data[: len(data) // 2])
    message = assert_refused(info, CorruptImageError, "undecodable_image", 422)
    assert "truncated" in message and "JPEG" in message


def test_truncated_png_is_corrupt() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")
    with pytest.raises(ImageError) as info:
        decode_image(data[: len(data) // 2])
    assert "PNG" in assert_refused(info, CorruptImageError, "undecodable_image", 422)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_right_magic_with_garbage_after_it_is_corrupt(fmt: str) -> None:
    good = encode(solid("RGB", RED), fmt)
    magic_length = {"JPEG": 3, "PNG": 8, "GIF": 6, "BMP": 18, "TIFF": 4, "WEBP": 12}[fmt]
    garbage = good[:magic_length] + b"\x07" * 200
    with pytest.raises(ImageError) as info:
        decode_image(garbage)
    assert_refused(info, CorruptImageError, "undecodable_image", 422)


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0)])
def test_zero_sized_png_is_refused_and_says_so(width: int, height: int) -> None:
    with pytest.raises(ImageError) as info:
        decode_image(png_with_header(width, height))
    message = assert_refused(info, CorruptImageError, "undecodable_image", 422)
    assert "no pixels" in message and f"{width}×{height}" in message


def test_zero_sized_gif_is_refused() -> None:
    gif = b"GIF89a" + struct.pack("<HHBBB", 0, 0, 0, 0, 0) + b";"
    with pytest.raises(ImageError) as info:
        decode_image(gif)
    assert "no pixels" in assert_refused(info, CorruptImageError, "undecodable_image", 422)


def test_byte_limit_is_enforced_with_sizes_in_the_message() -> None:
    data = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8)), "PNG")
    assert decode_image(data, max_bytes=len(data)).width == 80  # exactly at the limit is fine
    with pytest.raises(ImageError) as info:
        decode_image(data, max_bytes=len(data) - 1)
    message = assert_refused(info, FileTooLargeError, "payload_too_large", 413)
    assert "limit" in message


def test_read_image_file_refuses_an_oversized_file_from_its_size(tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as handle:  # sparse: 5 GB on paper, nothing on disk
        handle.truncate(5 * 1024**3)
    with pytest.raises(FileTooLargeError) as info:
        read_image_file(huge, max_bytes=20 * 1024 * 1024)
    assert "5 GB" in str(info.value) and "20 MB" in str(info.value)


def test_pixel_limit_is_per_call() -> None:
    data = encode(solid("RGB", RED, (20, 20)), "PNG")
    assert decode_image(data, max_pixels=400).width == 20
    with pytest.raises(ImageError) as info:
        decode_image(data, max_pixels=399)
    message = assert_refused(info, ImageTooLargeError, "image_too_large", 422)
    assert "20×20" in message and "399" in message


def test_dimensions_are_checked_before_any_pixel_is_decoded() -> None:
    # Both headers are followed by an empty pixel stream. The small one fails while decoding
    # (truncated); the large one must be refused from its header, before decoding starts.
    with pytest.raises(CorruptImageError):
        decode_image(png_with_header(100, 80))
    with pytest.raises(ImageError) as info:
        decode_image(png_with_header(10_000, 8_000))  # 80 Mpx > default 50 Mpx limit
    assert "10000×8000" in assert_refused(info, ImageTooLargeError, "image_too_large", 422)


def test_pillow_decompression_bomb_error_becomes_image_too_large() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError) as info:
        decode_image(png_with_header(20_000, 20_000), max_pixels=10**12)  # Pillow refuses 400 Mpx itself
    assert_refused(info, ImageTooLargeError, "image_too_large", 422)
    assert Image.MAX_IMAGE_PIXELS == before


@pytest.mark.parametrize("warning_action", ["ignore", "error"])
def test_pillow_decompression_bomb_warning_becomes_image_too_large(warning_action: str) -> None:
    # 100 Mpx is in Pillow's "warn" zone; whether warnings are ignored or raised, it is refused.
    with warnings.catch_warnings():
        warnings.simplefilter(warning_action)
        with pytest.raises(ImageError) as info:
            decode_image(png_with_header(10_000, 10_000), max_pixels=10**12)
    assert_refused(info, ImageTooLargeError, "image_too_large", 422)


def test_png_text_chunk_bomb_is_refused() -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # 8 MB of zeros compress to a few kB: a compressed comment that would balloon in memory.
    bomb = chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * (8 * 1024 * 1024), 9))
    with pytest.raises(ImageError) as info:
        decode_image(png_with_header(10, 10, extra_chunks=bomb))
    assert_refused(info, ImageTooLargeError, "image_too_large", 422)


def test_unreadable_paths_raise_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_image_file(tmp_path / "missing.jpg")
    with pytest.raises(IsADirectoryError):
        read_image_file(tmp_path)


# ----------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_sniff_format_recognises_each_supported_format(fmt: str) -> None:
    assert sniff_format(encode(solid("RGB", RED), fmt)) == fmt


def test_format_comes_from_content_not_from_the_file_name(tmp_path: Path) -> None:
    png_named_jpg = tmp_path / "holiday.jpg"
    png_named_jpg.write_bytes(encode(solid("RGB", GREEN), "PNG"))
    jpeg_named_txt = tmp_path / "notes.txt"
    jpeg_named_txt.write_bytes(encode(solid("RGB", GREEN), "JPEG", quality=95))
    text_named_png = tmp_path / "picture.png"
    text_named_png.write_text("definitely not a picture")

    assert (read_image_file(png_named_jpg).format, read_image_file(png_named_jpg).mime) == ("PNG", "image/png")
    assert (read_image_file(jpeg_named_txt).format, read_image_file(jpeg_named_txt).mime) == ("JPEG", "image/jpeg")
    with pytest.raises(NotAnImageError):
        read_image_file(text_named_png)


# ----------------------------------------------------------------------------- formats and modes


@pytest.mark.parametrize(
    ("fmt", "params", "tolerance"),
    [
        ("JPEG", {"quality": 95}, 6),
        ("PNG", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("WEBP", {"quality": 90}, 8),
        ("GIF", {}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("TIFF", {"compression": "tiff_lzw"}, 0),
    ],
    ids=["jpeg", "png", "webp-lossless", "webp-lossy", "gif", "bmp", "tiff", "tiff-lzw"],
)
def test_each_format_decodes_to_the_right_colour(fmt: str, params: dict, tolerance: int) -> None:
    decoded = decode_image(encode(solid("RGB", RED, (24, 16)), fmt, **params))
    assert decoded.rgb.shape == (16, 24, 3) and decoded.rgb.dtype == np.uint8
    assert (decoded.width, decoded.height) == (24, 16)
    assert decoded.format == fmt and decoded.mime == FORMATS[fmt].mime
    assert_uniform(decoded, RED, tolerance)


def test_gif_decodes_its_first_frame_only() -> None:
    frames = [solid("RGB", RED), solid("RGB", GREEN), solid("RGB", BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert_uniform(decode_image(data), RED)


def test_multipage_tiff_decodes_its_first_page() -> None:
    data = encode(solid("RGB", BLUE), "TIFF", save_all=True, append_images=[solid("RGB", YELLOW)])
    assert_uniform(decode_image(data), BLUE)


def test_bilevel_image_keeps_black_and_white() -> None:
    pattern = np.zeros((8, 8), dtype=bool)
    pattern[::2, ::2] = True
    image = Image.fromarray(pattern)
    assert image.mode == "1"
    for fmt in ("PNG", "TIFF", "BMP"):
        rgb = decode_image(encode(image, fmt)).rgb
        assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == [0, 0, 0], fmt


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "JPEG"])
def test_greyscale_becomes_equal_rgb_channels(fmt: str) -> None:
    tolerance = 1 if fmt == "JPEG" else 0
    assert_uniform(decode_image(encode(solid("L", 77), fmt)), (77, 77, 77), tolerance)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_alpha_is_composited_on_white(fmt: str) -> None:
    rgba = np.zeros((4, 3, 4), dtype=np.uint8)
    rgba[0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[1] = (255, 0, 0, 0)  # fully transparent red becomes white
    rgba[2] = (255, 0, 0, 128)  # half transparent red becomes pink
    rgba[3] = (0, 0, 0, 128)  # half transparent black becomes mid grey
    params = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    rgb = decode_image(encode(Image.fromarray(rgba, "RGBA"), fmt, **params)).rgb
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[1, 0].tolist() == [255, 255, 255]
    assert rgb[2, 0].tolist() == [255, 127, 127]
    assert rgb[3, 0].tolist() == [127, 127, 127]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_grey_with_alpha_is_composited_on_white(fmt: str) -> None:
    la = Image.merge("LA", [Image.new("L", (4, 2), 0), Image.fromarray(np.array([[0] * 4, [255] * 4], np.uint8))])
    rgb = decode_image(encode(la, fmt)).rgb
    assert rgb[0, 0].tolist() == [255, 255, 255]  # transparent black shows the white page
    assert rgb[1, 0].tolist() == [0, 0, 0]


def palette_image_with_transparent_index() -> Image.Image:
    image = Image.new("P", (4, 2), 0)
    palette = [0] * 768
    palette[0:3] = RED
    palette[3:6] = BLUE
    image.putpalette(palette)
    image.putpixel((0, 1), 1)
    image.info["transparency"] = 1
    return image


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_white(fmt: str) -> None:
    image = palette_image_with_transparent_index()
    decoded = decode_image(encode(image, fmt, transparency=1))
    assert decoded.rgb[0, 0].tolist() == list(RED)
    assert decoded.rgb[1, 0].tolist() == [255, 255, 255]  # the blue index was declared transparent


def test_palette_without_transparency_keeps_its_colours() -> None:
    image = palette_image_with_transparent_index()
    del image.info["transparency"]
    rgb = decode_image(encode(image, "PNG")).rgb
    assert rgb[0, 0].tolist() == list(RED) and rgb[1, 0].tolist() == list(BLUE)


def test_rgb_png_with_a_transparent_colour_key() -> None:
    image = solid("RGB", GREEN, (4, 2))
    image.putpixel((1, 1), RED)
    rgb = decode_image(encode(image, "PNG", transparency=RED)).rgb
    assert rgb[0, 0].tolist() == list(GREEN) and rgb[1, 1].tolist() == [255, 255, 255]


def test_cmyk_tiff_and_jpeg_decode_to_rgb() -> None:
    cmyk_red = solid("CMYK", (0, 255, 255, 0))
    assert_uniform(decode_image(encode(cmyk_red, "TIFF")), (255, 0, 0))
    assert_uniform(decode_image(encode(cmyk_red, "JPEG", quality=95)), (255, 0, 0), tolerance=6)


def test_ycbcr_tiff_decodes_to_the_original_colour() -> None:
    ycbcr = solid("RGB", YELLOW).convert("YCbCr")
    assert_uniform(decode_image(encode(ycbcr, "TIFF")), YELLOW, tolerance=3)


def sixteen_bit_ramp() -> np.ndarray:
    return np.array([[0, 257 * 100, 32896, 65535]], dtype=np.uint16)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_greyscale_is_scaled_not_clipped(fmt: str) -> None:
    image = Image.fromarray(sixteen_bit_ramp())
    assert image.mode == "I;16"
    rgb = decode_image(encode(image, fmt)).rgb
    assert rgb[0, :, 0].tolist() == [0, 100, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_32_bit_integer_tiff_is_scaled_as_16_bit_data() -> None:
    image = Image.fromarray(sixteen_bit_ramp().astype(np.int32))
    assert image.mode == "I"
    assert decode_image(encode(image, "TIFF")).rgb[0, :, 1].tolist() == [0, 100, 128, 255]


def test_integer_tiff_outside_16_bits_is_stretched() -> None:
    image = Image.fromarray(np.array([[-1000, 0, 1000, 3000]], dtype=np.int32))
    assert decode_image(encode(image, "TIFF")).rgb[0, :, 0].tolist() == [0, 64, 128, 255]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([0.0, 0.5, 1.0], [0, 128, 255]), ([0.0, 100.0, 255.0], [0, 100, 255]), ([-1.0, 0.0, 3.0], [0, 64, 255])],
    ids=["unit-range", "byte-range", "arbitrary-range"],
)
def test_float_tiff_is_scaled_to_bytes(values: list[float], expected: list[int]) -> None:
    image = Image.fromarray(np.array([values], dtype=np.float32))
    assert image.mode == "F"
    assert decode_image(encode(image, "TIFF")).rgb[0, :, 0].tolist() == expected


# ----------------------------------------------------------------------------- orientation

# How to turn the stored pixels upright for EXIF orientation n (EXIF 2.3, tag 0x0112), in
# Pillow's transpose vocabulary. To *store* an upright picture under orientation n, apply the
# inverse: every step is its own inverse except the two quarter turns (6 and 8).
T = Image.Transpose
TO_UPRIGHT = {
    2: T.FLIP_LEFT_RIGHT,
    3: T.ROTATE_180,
    4: T.FLIP_TOP_BOTTOM,
    5: T.TRANSPOSE,
    6: T.ROTATE_270,
    7: T.TRANSVERSE,
    8: T.ROTATE_90,
}
INVERSE = {**TO_UPRIGHT, 6: T.ROTATE_90, 8: T.ROTATE_270}


def quadrants(width: int = 96, height: int = 64) -> Image.Image:
    """Upright test card: red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    card = np.zeros((height, width, 3), dtype=np.uint8)
    card[: height // 2, : width // 2] = RED
    card[: height // 2, width // 2 :] = GREEN
    card[height // 2 :, : width // 2] = BLUE
    card[height // 2 :, width // 2 :] = YELLOW
    return Image.fromarray(card)


def corner_colours(rgb: np.ndarray) -> list[tuple[int, int, int]]:
    """Mean colour of a small patch inside each corner: top-left, top-right, bottom-left, bottom-right."""
    h, w = rgb.shape[:2]
    patches = [rgb[2:8, 2:8], rgb[2:8, w - 8 : w - 2], rgb[h - 8 : h - 2, 2:8], rgb[h - 8 : h - 2, w - 8 : w - 2]]
    return [tuple(int(round(v)) for v in p.reshape(-1, 3).mean(axis=0)) for p in patches]


def assert_corners(rgb: np.ndarray, expected: list[tuple[int, int, int]], tolerance: int = 12) -> None:
    for got, want in zip(corner_colours(rgb), expected):
        assert max(abs(g - w) for g, w in zip(got, want)) <= tolerance, (corner_colours(rgb), expected)


def stored_with_orientation(orientation: int, fmt: str) -> bytes:
    stored = quadrants() if orientation == 1 else quadrants().transpose(INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, object] = {"exif": exif.tobytes()}
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = 95
    return encode(stored, fmt, **params)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_to_jpeg(orientation: int) -> None:
    decoded = decode_image(stored_with_orientation(orientation, "JPEG"))
    assert (decoded.width, decoded.height) == (96, 64)  # upright again, even after quarter turns
    assert decoded.rgb.shape == (64, 96, 3) and decoded.rgb.flags["C_CONTIGUOUS"]
    assert_corners(decoded.rgb, [RED, GREEN, BLUE, YELLOW])


def test_orientation_6_spelled_out() -> None:
    # EXIF orientation 6: "the 0th row is the visual right-hand side, the 0th column the visual
    # top". So the stored picture is the upright one turned a quarter counter-clockwise.
    upright = np.asarray(quadrants())
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))
    assert stored.size == (64, 96)
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(stored, "PNG", exif=exif.tobytes()))
    assert np.array_equal(decoded.rgb, upright)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_orientation_is_applied_in_other_formats(fmt: str) -> None:
    decoded = decode_image(stored_with_orientation(8, fmt))
    assert (decoded.width, decoded.height) == (96, 64)
    assert_corners(decoded.rgb, [RED, GREEN, BLUE, YELLOW])


def test_out_of_range_orientation_is_ignored() -> None:
    exif = Image.Exif()
    exif[0x0112] = 42
    decoded = decode_image(encode(quadrants(), "PNG", exif=exif.tobytes()))
    assert_corners(decoded.rgb, [RED, GREEN, BLUE, YELLOW], tolerance=0)


# ----------------------------------------------------------------------------- real photo, threads


def test_real_coco_photo_decodes_to_its_known_size(coco_photo: Path) -> None:
    decoded = read_image_file(coco_photo, max_bytes=20 * 1024 * 1024)
    assert (decoded.width, decoded.height, decoded.format, decoded.mime) == (640, 426, "JPEG", "image/jpeg")
    assert decoded.rgb.shape == (426, 640, 3)
    with Image.open(coco_photo) as reference:
        assert np.array_equal(decoded.rgb, np.asarray(reference.convert("RGB")))


def test_concurrent_decodes_with_different_limits_do_not_interfere(coco_dev_images: list[Path]) -> None:
    photos = [p.read_bytes() for p in coco_dev_images[:6]]
    expected = [decode_image(p).rgb for p in photos]

    def job(i: int) -> object:
        k = i % len(photos)
        if i % 3 == 0:  # a caller with a tiny limit, interleaved with callers with the default one
            try:
                decode_image(photos[k], max_pixels=1000)
            except ImageTooLargeError:
                return "refused"
            return "accepted"
        return bool(np.array_equal(decode_image(photos[k]).rgb, expected[k]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(job, range(36)))
    assert results == ["refused" if i % 3 == 0 else True for i in range(36)]


# ----------------------------------------------------------------------------- thumbnails


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1000, 500), (320, 160)), ((500, 1000), (160, 320)), ((100, 50), (100, 50)), ((3000, 7), (320, 1))],
    ids=["landscape", "portrait", "small-not-enlarged", "sliver"],
)
def test_thumbnail_keeps_aspect_ratio_and_is_a_valid_jpeg(size: tuple[int, int], expected: tuple[int, int]) -> None:
    width, height = size
    thumb = thumbnail_jpeg(np.asarray(solid("RGB", BLUE, (width, height))))
    decoded = decode_image(thumb)
    assert decoded.format == "JPEG"
    assert (decoded.width, decoded.height) == expected
    assert_uniform(decoded, BLUE, tolerance=8)


def test_thumbnail_of_a_real_photo(coco_photo: Path) -> None:
    rgb = read_image_file(coco_photo).rgb
    thumb = decode_image(thumbnail_jpeg(rgb, max_side=200, quality=80))
    assert (thumb.width, thumb.height) == (200, 133)  # 640×426 scaled by 200/640
    assert len(thumbnail_jpeg(rgb, max_side=200, quality=80)) < len(coco_photo.read_bytes())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rgb": np.zeros((10, 10), dtype=np.uint8)},
        {"rgb": np.zeros((10, 10, 3), dtype=np.float32)},
        {"rgb": np.zeros((0, 10, 3), dtype=np.uint8)},
        {"rgb": np.zeros((10, 10, 3), dtype=np.uint8), "quality": 0},
        {"rgb": np.zeros((10, 10, 3), dtype=np.uint8), "max_side": 0},
    ],
    ids=["grey-2d", "float", "empty", "quality-0", "max-side-0"],
)
def test_thumbnail_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        thumbnail_jpeg(**kwargs)
