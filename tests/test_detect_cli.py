"""``recommender detect`` on real photos mixed with bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recommender.cli import main
from recommender.detection import resolve
from recommender.detection.fetch import fetch_yolov5

GOOD = ("000000000139.jpg", "000000005193.jpg")  # a living room with a tv; people on a beach


@pytest.fixture(scope="module")
def yolo_weights_dir(weights_dir: Path) -> Path:
    fetch_yolov5(weights_dir)
    return weights_dir


@pytest.fixture
def files(coco_dev_dir: Path, tmp_path: Path) -> list[Path]:
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("shopping list: milk, eggs\n")
    return [coco_dev_dir / "images" / GOOD[0], not_an_image, tmp_path / "missing.png", coco_dev_dir / "images" / GOOD[1]]


def _run(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_detect_lists_classes_and_reports_each_bad_file_on_one_line(yolo_weights_dir: Path, files: list[Path]) -> None:
    result = _run(["detect", "--weights-dir", str(yolo_weights_dir), *map(str, files)])
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "yolov5s" in out
    assert GOOD[0] in out and GOOD[1] in out
    assert "tv" in out and "person" in out
    assert "ms" in out  # time taken is shown
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2, result.stderr
    assert "notes.jpg" in errors[0] and "not a supported image" in errors[0]
    assert "missing.png" in errors[1] and "no such file" in errors[1]
    assert "Traceback" not in result.output


def test_detect_json_has_classes_boxes_and_errors(yolo_weights_dir: Path, files: list[Path]) -> None:
    result = _run(["detect", "--json", "--threshold", "0.6", "--weights-dir", str(yolo_weights_dir), *map(str, files)])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["detector"] == resolve("yolov5s").name
    assert document["threshold"] == 0.6
    assert [Path(i["file"]).name for i in document["images"]] == list(GOOD)
    for image in document["images"]:
        assert image["detect_ms"] > 0 and image["decode_ms"] > 0
        scores = [c["score"] for c in image["classes"]]
        assert scores == sorted(scores, reverse=True) and scores
        assert all(s >= 0.6 for s in scores)
        for obj in image["objects"]:
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 < x2 <= image["width"] and 0 <= y1 < y2 <= image["height"]
            assert obj["score"] >= 0.6
    living_room = {c["name"] for c in document["images"][0]["classes"]}
    assert "tv" in living_room
    assert {e["code"] for e in document["errors"]} == {"unsupported_media_type", "not_found"}


def test_detect_without_weights_explains_how_to_fetch_them(tmp_path: Path, coco_dev_dir: Path) -> None:
    result = _run(["detect", "--weights-dir", str(tmp_path), str(coco_dev_dir / "images" / GOOD[0])])
    assert result.exit_code == 1
    assert "recommender fetch-weights" in result.stderr
    assert "Traceback" not in result.output
