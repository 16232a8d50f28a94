"""Big pictures are decoded within a memory budget and at the size the service needs (issue 12, defect 4).

Reduced decoding must not change what users see: the stored size, the boxes in original
pixels, colours and transparency. The budget must make decodes wait, never fail. The peak
memory of a real server under the attack is measured by bench/memory.py (not here: no timing
or memory figures in unit tests).
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import test_api
from recommender.budget import PixelBudget
from recommender.detection import Detector
from recommender.images import WORKING_SIDE, decode_image
from test_api import Api, make_api, upload

yolo = test_api.yolo  # the real detector, loaded once (a fixture of test_api.py)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def test_a_large_jpeg_is_decoded_reduced_and_keeps_its_real_size() -> None:
    data = encode(Image.new("RGB", (4000, 3000), (200, 30, 40)), "JPEG", quality=95)
    decoded = decode_image(data, max_side=WORKING_SIDE)
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert WORKING_SIDE == 1600 and decoded.rgb.shape[:2] == (1200, 1600)  # 1/2 in the decoder, then 1600
    assert decoded.scale == (2.5, 2.5)
    assert np.abs(decoded.rgb.astype(int) - (200, 30, 40)).max() <= 3
    full = decode_image(data)
    assert full.rgb.shape[:2] == (3000, 4000) and full.scale == (1.0, 1.0)


def test_reduced_decoding_follows_exif_orientation() -> None:
    image = Image.new("RGB", (4000, 1000), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: upright it is 1000 wide, 4000 tall
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()), max_side=1000)
    assert (decoded.width, decoded.height) == (1000, 4000)
    assert decoded.rgb.shape[0] > decoded.rgb.shape[1] and max(decoded.rgb.shape[:2]) <= 1000
    sx, sy = decoded.scale
    assert abs(sx - sy) < 0.01 and abs(decoded.rgb.shape[0] * sy - 4000) < 1e-6


@pytest.mark.parametrize("mode,colour,expected", [
    ("L", 77, (77, 77, 77)),
    ("I;16", 65535, (255, 255, 255)),
    ("RGBA", (0, 0, 255, 0), (255, 255, 255)),  # see-through: white, as before reduction
    ("LA", (0, 128), (127, 127, 127)),
    ("1", 1, (255, 255, 255)),
])
def test_other_formats_are_reduced_before_they_become_rgb_with_the_same_colours(mode: str, colour: object,
                                                                                 expected: tuple[int, int, int]) -> None:
    data = encode(Image.new(mode, (3000, 1200), colour), "PNG")
    decoded = decode_image(data, max_side=1000)
    assert (decoded.width, decoded.height) == (3000, 1200) and decoded.rgb.shape == (400, 1000, 3)
    assert np.abs(decoded.rgb.astype(int) - expected).max() <= 1


def test_a_colour_keyed_palette_keeps_its_transparency_when_reduced() -> None:
    image = Image.new("P", (2400, 2400), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    decoded = decode_image(encode(image, "PNG", transparency=1), max_side=600)
    assert decoded.rgb.shape == (600, 600, 3) and np.all(decoded.rgb == 255)


def test_the_budget_makes_decodes_wait_for_room_and_never_refuses_one() -> None:
    budget = PixelBudget(1_000_000)
    data = encode(Image.new("L", (1000, 800), 50), "PNG")  # 0.8 MP
    done: list[float] = []
    with budget.hold(500_000):  # another decode holds half the budget
        worker = threading.Thread(target=lambda: done.append(decode_image(data, budget=budget).width))
        worker.start()
        time.sleep(0.5)
        assert not done, "0.8 MP do not fit beside 0.5 MP in a 1 MP budget: the decode waits"
    worker.join(timeout=30)
    assert done == [1000] and budget.used == 0
    big = encode(Image.new("L", (1500, 1000), 50), "PNG")  # larger than the whole budget: it runs alone
    assert decode_image(big, budget=budget).width == 1500 and budget.used == 0


def test_held_pixels_are_returned_when_a_decode_fails() -> None:
    budget = PixelBudget(1_000_000)
    data = encode(Image.new("RGB", (900, 900), 0), "PNG")
    with pytest.raises(Exception):
        decode_image(data[: len(data) // 2], budget=budget)
    assert budget.used == 0


# ----------------------------------------------------------------------------- through the service


@pytest.fixture
def big_api(tmp_path: Path, yolo: Detector, coco_dev_images: list[Path]):
    built = make_api(f"sqlite:///{tmp_path / 'big.sqlite3'}", tmp_path / "data", yolo, coco_dev_images[:2], max_upload_mb=20)
    yield built
    built.service.close()


def test_boxes_of_a_photo_detected_reduced_are_reported_in_its_own_pixels(big_api: Api, coco_dev_images: list[Path]) -> None:
    photo = coco_dev_images[2]
    with Image.open(photo) as image:
        small = image.convert("RGB")
    factor = 4  # e.g. 640×480 → 2560×1920: over WORKING_SIDE, so detection runs on a reduced copy
    large = small.resize((small.width * factor, small.height * factor), Image.Resampling.BICUBIC)
    body = upload(big_api.client, encode(large, "JPEG", quality=92), "large.jpg").get_json()
    reference = upload(big_api.client, encode(small, "JPEG", quality=92), "small.jpg").get_json()
    assert (body["width"], body["height"]) == large.size
    best, ref = body["detections"][0], reference["detections"][0]
    assert best["class"] == ref["class"]
    for got, expected in zip(best["box"], ref["box"]):
        assert abs(got - expected * factor) <= 0.04 * large.width, (best["box"], ref["box"])


def test_the_thumbnail_is_made_at_ingest_and_remade_reduced_when_missing(big_api: Api, coco_dev_images: list[Path]) -> None:
    data = encode(Image.new("RGB", (5000, 2500), (30, 90, 160)), "JPEG")
    body = upload(big_api.client, data, "wide.jpg").get_json()
    thumbs = list((big_api.settings.media_dir / "thumbs").rglob("*.jpg"))
    assert len(thumbs) == 3, "every stored photo has its thumbnail before anyone asks for it"
    made_at_ingest = big_api.client.get(body["thumb_url"]).data
    with Image.open(io.BytesIO(made_at_ingest)) as thumb:
        assert thumb.size == (320, 160)
    for path in thumbs:
        path.unlink()  # a collection stored before thumbnails were made at ingest
    remade = big_api.client.get(body["thumb_url"])
    assert remade.status_code == 200
    with Image.open(io.BytesIO(remade.data)) as thumb:
        assert thumb.size == (320, 160)
        assert np.abs(np.asarray(thumb).astype(int) - (30, 90, 160)).max() <= 4
