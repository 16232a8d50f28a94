"""The INT8 YOLOv5s of the ``fast`` profile, quantized from a few real photos, finds in other
photos the same main objects as the float model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from recommender.classes import class_name
from recommender.detection import DetectorError
from recommender.detection.fetch import fetch_yolov5
from recommender.detection.quantize import calibration_photos, quantize_yolov5
from recommender.detection.yolov5 import (
    DEFAULT_INPUT_SIZE,
    DEFAULT_SCORE_THRESHOLD,
    YoloV5Detector,
    decode,
    decode_heads,
    letterbox,
)
from recommender.images import read_image_file

N_PHOTOS = 40
N_CALIBRATION = 8
CONFIDENT = 0.5  # a float box this sure is an object a user sees in the photo's detections


@pytest.fixture(scope="module")
def tested_photos(coco_dev_images: list[Path]) -> list[Path]:
    return coco_dev_images[:N_PHOTOS]


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, weights_dir: Path, coco_dev_dir: Path, tested_photos: list[Path]) -> Path:
    weights = fetch_yolov5(weights_dir)
    assert weights.onnx is not None
    # Calibrated on other photos than the ones compared below.
    calibration = calibration_photos(coco_dev_dir / "images", N_CALIBRATION, skip=[p.name for p in tested_photos])
    out = tmp_path_factory.mktemp("int8") / "yolov5s-int8.onnx"
    return quantize_yolov5(weights.onnx, calibration, out, method="percentile", keep_float=("heads", "first"))


def _int8_detect(session: ort.InferenceSession, rgb: np.ndarray):
    """Detection as the detector does it, with the INT8 model in place of the float one."""
    batch, scale, pad = letterbox(rgb, DEFAULT_INPUT_SIZE, rect=True)
    prediction = decode_heads(session.run(None, {session.get_inputs()[0].name: batch}))
    return decode(
        prediction, image_size=(rgb.shape[1], rgb.shape[0]), scale=scale, pad=pad, score_threshold=DEFAULT_SCORE_THRESHOLD
    )


def test_int8_model_finds_the_float_models_main_objects(int8_model: Path, weights_dir: Path, tested_photos) -> None:
    detector = YoloV5Detector(weights_dir, runtime="onnxruntime")
    session = ort.InferenceSession(str(int8_model), providers=["CPUExecutionProvider"])
    same_top, confident, kept = 0, 0, 0
    for path in tested_photos:
        rgb = read_image_file(path).rgb
        reference, found = detector.detect(rgb), _int8_detect(session, rgb)
        same_top += int(np.argmax(reference.class_scores) == np.argmax(found.class_scores))
        sure = {int(c) for c, s in zip(reference.class_ids, reference.scores) if s >= CONFIDENT}
        confident += len(sure)
        kept += len(sure & {int(c) for c in found.class_ids})
        missing = sorted(class_name(c) for c in sure - {int(c) for c in found.class_ids})
        if missing:
            print(f"{path.name}: int8 misses {missing}")
    print(f"\nint8 vs float on {len(tested_photos)} photos: same top class {same_top}, confident classes kept {kept}/{confident}")
    assert same_top >= 0.9 * len(tested_photos)
    assert confident >= len(tested_photos) // 2, "too few confident objects to compare"
    assert kept >= 0.95 * confident


def test_unknown_layer_group_is_refused_before_any_work(weights_dir: Path, tmp_path: Path, tested_photos) -> None:
    weights = fetch_yolov5(weights_dir)
    with pytest.raises(DetectorError, match="unknown layer group"):
        quantize_yolov5(weights.onnx, tested_photos[:1], tmp_path / "m.onnx", keep_float=("backbone",))
    assert not (tmp_path / "m.onnx").exists()
