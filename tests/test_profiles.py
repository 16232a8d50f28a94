"""Detection profiles and the aggregation of box evidence: what a user of DETECTOR / DETECT_PROFILE sees."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recommender import bootstrap
from recommender.cli import main
from recommender.config import Settings
from recommender.detection import SPECS, DetectorError, create_detector, lookup, resolve
from recommender.detection.aggregate import class_values
from recommender.detection.fetch import fetch_yolov5
from recommender.images import read_image_file
from recommender.vectors import class_presence, detector_ranking

DEFAULT = resolve("yolov5s").name
PEOPLE_PHOTO = "000000005193.jpg"  # several people: many distinct person boxes


@pytest.fixture(scope="module")
def yolo_weights(weights_dir: Path) -> Path:
    fetch_yolov5(weights_dir)
    return weights_dir


def _candidate(cx: float, cy: float, size: float, objectness: float, class_id: int, p: float = 1.0) -> np.ndarray:
    row = np.zeros(85, dtype=np.float32)
    row[:5] = (cx, cy, size, size, objectness)
    row[4 + class_id] = p
    return row


# --------------------------------------------------------------------------- aggregation


def test_several_weak_boxes_of_a_class_add_up_but_one_object_seen_twice_does_not() -> None:
    dog, cat = 17, 16
    prediction = np.stack(
        [_candidate(50 + 100 * i, 50, 60, 0.3, dog) for i in range(3)]  # three dogs, apart
        + [_candidate(50, 300, 60, 0.3, cat), _candidate(52, 302, 60, 0.3, cat)]  # one cat, two anchors
    )
    best = class_values(prediction, aggregation="max")
    combined = class_values(prediction, aggregation="noisy-or")
    assert best[dog] == pytest.approx(0.3) and combined[dog] == pytest.approx(1 - 0.7**3, abs=1e-5)
    assert combined[cat] == pytest.approx(0.3)  # duplicates are suppressed before combining
    assert combined[0] == 0 and np.count_nonzero(combined) == 2


def test_on_a_real_photo_noisy_or_raises_classes_with_many_boxes_only(yolo_weights: Path, coco_dev_dir: Path) -> None:
    detector = create_detector("yolov5s", yolo_weights)  # the model behind every profile
    candidates = detector.candidates(read_image_file(coco_dev_dir / "images" / PEOPLE_PHOTO).rgb)
    best = class_values(candidates, aggregation="max")
    combined = class_values(candidates, aggregation="noisy-or")
    person = 1
    assert combined[person] > best[person] + 0.01
    assert np.all(combined >= best - 1e-6)  # never below the best box
    # Classes without any box above the floor keep their best candidate score.
    faint = best < 0.005
    assert np.array_equal(combined[faint], best[faint])


def test_the_quality_profile_averages_four_views_and_keeps_the_balanced_boxes(yolo_weights: Path, coco_dev_dir: Path) -> None:
    rgb = read_image_file(coco_dev_dir / "images" / PEOPLE_PHOTO).rgb
    balanced = create_detector(resolve("yolov5s", "balanced"), yolo_weights)
    quality = create_detector(resolve("yolov5s", "quality"), yolo_weights)
    plain, averaged = balanced.detect(rgb), quality.detect(rgb)
    # Boxes (what the page shows) come from the photo itself, at 640, in both profiles.
    np.testing.assert_array_equal(plain.class_ids, averaged.class_ids)
    np.testing.assert_allclose(plain.boxes, averaged.boxes, atol=1e-3)
    views = [balanced.candidates(rgb, size, flip=flip) for size in (640, 832) for flip in (False, True)]
    expected = np.mean([class_values(v, aggregation="noisy-or") for v in views], axis=0)
    np.testing.assert_allclose(averaged.class_scores, expected, atol=1e-5)
    assert not np.allclose(averaged.class_scores, plain.class_scores, atol=1e-3)


# ----------------------------------------------------------------------------- profiles


def test_profiles_have_distinct_stored_names_and_the_model_name_goes_through_the_profile() -> None:
    yolo = [spec for spec in SPECS.values() if spec.model == "yolov5s"]
    assert len({s.name for s in yolo}) == len(yolo) and len({s.profile for s in yolo}) == len(yolo)
    assert DEFAULT != "yolov5s"  # the old stored name meant the best candidate score
    assert resolve("yolov5s", "quality").profile == "quality" and resolve("yolov5s", "quality").options["passes"]
    assert resolve("yolov5s", "legacy").name == "yolov5s" and lookup("yolov5s").aggregation == "max"
    assert resolve(DEFAULT, "quality").name == DEFAULT  # a full name ignores the profile
    with pytest.raises(DetectorError, match="offers"):
        resolve("yolov5s", "nonsense")
    settings = Settings.from_env({"DETECTOR": "yolov5s", "DETECT_PROFILE": "quality"})
    assert bootstrap.detector_spec(settings).name == resolve("yolov5s", "quality").name


def test_each_entry_ranks_with_its_own_calibration() -> None:
    scores = np.zeros(81)
    scores[1] = 0.3
    for spec in SPECS.values():
        a, b = spec.calibration
        p = detector_ranking(spec.name).presence(scores)[1]
        assert p == pytest.approx(1 / (1 + np.exp(-(a + b * np.log(0.3 / 0.7)))))


# ------------------------------------------------------------------ an older collection


def test_a_collection_of_old_vectors_keeps_them_apart_and_is_told_to_reindex(
    yolo_weights: Path, coco_dev_images: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = Settings(data_dir=tmp_path / "data", weights_dir=yolo_weights, detect_profile="legacy")
    with bootstrap.build(old) as service:
        service.ingest.paths(coco_dev_images[:3])
        assert service.queries.status().detector == "yolov5s"

    new = Settings(data_dir=tmp_path / "data", weights_dir=yolo_weights)
    with caplog.at_level(logging.WARNING, logger="recommender.bootstrap"):
        service = bootstrap.build(new)
    with service:
        assert f"recommender reindex --detector {DEFAULT} --activate" in caplog.text
        # Until then it serves the old vectors, and a new photo gets an old-style vector too.
        added = service.ingest.file(coco_dev_images[3])
        assert added.detector == "yolov5s" and service.queries.status().indexed == 4
        names, old_raw = service.queries.stored_vectors()
        legacy = create_detector("yolov5s", yolo_weights)
        expected = class_presence(legacy.detect(read_image_file(coco_dev_images[3]).rgb))
        np.testing.assert_allclose(old_raw[names.index(added.image.name)], expected, atol=1e-4)

        switched = service.admin.reindex(DEFAULT, activate=True)
        assert switched.computed == 4 and service.queries.status().detector == DEFAULT
        _names, raw = service.queries.stored_vectors()
        # The old vectors are untouched; the new ones hold more of the evidence.
        assert len(raw) == 4 and np.all(raw >= old_raw - 1e-4) and not np.allclose(raw, old_raw, atol=1e-3)


def test_reindex_with_the_model_name_switches_to_the_profile_entry(
    yolo_weights: Path, coco_dev_images: list[Path], tmp_path: Path
) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "WEIGHTS_DIR": str(yolo_weights), "DETECT_PROFILE": "legacy"}
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", "--quiet", str(coco_dev_images[0])], env=env).exit_code == 0
    env.pop("DETECT_PROFILE")
    result = runner.invoke(main, ["reindex", "--quiet", "--detector", "yolov5s", "--activate"], env=env)
    assert result.exit_code == 0, result.output
    assert f"The collection now uses {DEFAULT}" in result.stdout


def test_eval_says_which_profile_and_aggregation_it_measured(
    yolo_weights: Path, coco_dev_images: list[Path], coco_dev_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in coco_dev_images[:6]:
        (folder / path.name).write_bytes(path.read_bytes())
    env = {"WEIGHTS_DIR": str(yolo_weights)}
    args = ["eval", "--labels", str(coco_dev_dir / "labels.json"), "--quiet", str(folder)]
    table = CliRunner().invoke(main, args, env=env)
    assert table.exit_code == 0, table.output
    spec = SPECS[DEFAULT]
    assert f"detector {DEFAULT}: profile {spec.profile}, aggregation {spec.aggregation}" in table.stdout
    as_json = json.loads(CliRunner().invoke(main, [*args, "--json"], env={**env, "DETECT_PROFILE": "legacy"}).stdout)
    assert (as_json["detector"], as_json["profile"], as_json["aggregation"]) == ("yolov5s", "legacy", "max")
