"""The Mask R-CNN backend (pixellib) loads the weights file it is given and runs from any thread.

The real mask_rcnn_coco.h5 cannot be downloaded here. Instead the pixellib model is built once
per session with random weights and saved in the real layout (``keras_model.save_weights``,
258 MB); copies of it get a final classifier that always answers one class. A detector that
predicted from anything but the file it loaded (pixellib's own ``load_weights`` defect) would
not follow that class.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from recommender.classes import NUM_CLASSES, class_id
from recommender.detection import WeightsMissingError, create_detector
from recommender.detection.base import Detections, DetectorError
from recommender.detection.maskrcnn import MaskRCNNDetector, build_model
from recommender.detection.weights import MASKRCNN_FILENAME

pytestmark = [pytest.mark.maskrcnn, pytest.mark.slow]

DOG = class_id("dog")
PIZZA = class_id("pizza")
LANDSCAPE_PHOTO = "000000000139.jpg"  # 640×426
PORTRAIT_PHOTO = "000000002431.jpg"  # 457×640: a swapped x/y would leave the image


def _rgb(coco_dev_dir: Path, name: str) -> np.ndarray:
    with Image.open(coco_dev_dir / "images" / name) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="session")
def random_weights_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pixellib's Mask R-CNN with random weights, saved as Keras saves the real file."""
    path = tmp_path_factory.mktemp("maskrcnn-random") / "random.h5"
    model = build_model()
    try:
        with model.graph.as_default(), model.session.as_default():
            model.keras_model.save_weights(str(path))
    finally:
        model.close()
    yield path
    path.unlink(missing_ok=True)


def _weights_biased_toward(random_file: Path, directory: Path, favourite: int) -> Path:
    """A copy of the random weights whose classifier gives every region ``favourite``.

    With a zero kernel, every region's class logits are the bias: softmax(10 for
    ``favourite``, 0 elsewhere) scores it 0.996, above the default threshold of 0.7.
    """
    target = directory / MASKRCNN_FILENAME
    shutil.copyfile(random_file, target)
    with h5py.File(target, "r+") as handle:
        layer = handle["mrcnn_class_logits"]
        for weight_name in layer.attrs["weight_names"]:
            weight_name = weight_name.decode() if isinstance(weight_name, bytes) else weight_name
            values = layer[weight_name]
            if weight_name.endswith("bias:0"):
                bias = np.zeros(values.shape, dtype=values.dtype)
                bias[favourite] = 10.0
                values[...] = bias
            else:
                values[...] = np.zeros(values.shape, dtype=values.dtype)
    return directory


@pytest.fixture(scope="module")
def dog_detector(random_weights_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaskRCNNDetector]:
    """Loads lazily; a small input size keeps the several calls of these tests quicker."""
    directory = _weights_biased_toward(random_weights_file, tmp_path_factory.mktemp("maskrcnn-dog"), DOG)
    detector = MaskRCNNDetector(directory, image_max_dim=256)
    yield detector
    detector.close()
    (directory / MASKRCNN_FILENAME).unlink()


@pytest.fixture(scope="module")
def dog_sequential(dog_detector: MaskRCNNDetector, coco_dev_dir: Path) -> dict[str, Detections]:
    """Both photos detected one after the other in the main thread."""
    return {name: dog_detector.detect(_rgb(coco_dev_dir, name)) for name in (LANDSCAPE_PHOTO, PORTRAIT_PHOTO)}


@pytest.fixture(scope="module")
def pizza_result(
    random_weights_file: Path, tmp_path_factory: pytest.TempPathFactory, coco_dev_dir: Path
) -> tuple[np.ndarray, Detections]:
    """The reference configuration (1024×1024, threshold 0.7) on a portrait photo, created
    through the factory the service uses and loaded and run in a worker thread."""
    directory = _weights_biased_toward(random_weights_file, tmp_path_factory.mktemp("maskrcnn-pizza"), PIZZA)
    detector = create_detector("maskrcnn", directory)
    rgb = _rgb(coco_dev_dir, PORTRAIT_PHOTO)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            detections = pool.submit(detector.detect, rgb).result()
    finally:
        detector.close()
        (directory / MASKRCNN_FILENAME).unlink()
    return rgb, detections


def test_detections_follow_the_classifier_of_the_loaded_file(
    dog_sequential: dict[str, Detections], pizza_result: tuple[np.ndarray, Detections]
) -> None:
    dogs = dog_sequential[LANDSCAPE_PHOTO]
    _, pizzas = pizza_result

    assert len(dogs) > 0 and len(pizzas) > 0
    assert set(dogs.class_ids.tolist()) == {DOG}
    assert set(pizzas.class_ids.tolist()) == {PIZZA}
    np.testing.assert_allclose(dogs.scores, np.exp(10) / (np.exp(10) + 80), rtol=1e-4)
    # The vector the index ranks by names the same single class.
    assert np.flatnonzero(dogs.class_scores).tolist() == [DOG]
    assert np.flatnonzero(pizzas.class_scores).tolist() == [PIZZA]


def test_output_follows_the_detections_contract(pizza_result: tuple[np.ndarray, Detections]) -> None:
    rgb, detections = pizza_result
    height, width = rgb.shape[:2]
    n = len(detections)

    assert detections.class_ids.dtype == np.int32 and detections.class_ids.shape == (n,)
    assert detections.scores.dtype == np.float32 and detections.scores.shape == (n,)
    assert detections.boxes.dtype == np.float32 and detections.boxes.shape == (n, 4)
    assert ((detections.class_ids >= 1) & (detections.class_ids <= 80)).all()
    assert ((detections.scores >= 0.7) & (detections.scores <= 1.0)).all()
    x1, y1, x2, y2 = detections.boxes.T
    assert (0 <= x1).all() and (x1 < x2).all() and (x2 <= width).all()
    assert (0 <= y1).all() and (y1 < y2).all() and (y2 <= height).all()
    assert detections.masks is not None
    assert detections.masks.dtype == bool and detections.masks.shape == (height, width, n)
    assert detections.class_scores.dtype == np.float32 and detections.class_scores.shape == (NUM_CLASSES,)
    assert detections.class_scores[PIZZA] == pytest.approx(detections.scores.max())
    # A mask lies inside its box (pixellib pastes it there).
    for i in range(n):
        ys, xs = np.nonzero(detections.masks[:, :, i])
        if xs.size:
            assert xs.min() >= np.floor(x1[i]) and xs.max() < np.ceil(x2[i])
            assert ys.min() >= np.floor(y1[i]) and ys.max() < np.ceil(y2[i])


def test_worker_threads_get_the_same_detections_as_sequential_calls(
    dog_detector: MaskRCNNDetector, dog_sequential: dict[str, Detections], coco_dev_dir: Path
) -> None:
    names = [LANDSCAPE_PHOTO, PORTRAIT_PHOTO]
    images = [_rgb(coco_dev_dir, name) for name in names]

    # The model was loaded in the main thread; both workers use it at the same time.
    with ThreadPoolExecutor(max_workers=2) as pool:
        concurrent = list(pool.map(dog_detector.detect, images))
    sequential = [dog_sequential[name] for name in names]

    for image, threaded, plain in zip(images, concurrent, sequential):
        assert len(plain) > 0
        np.testing.assert_array_equal(threaded.class_ids, plain.class_ids)
        np.testing.assert_allclose(threaded.scores, plain.scores, rtol=1e-5)
        np.testing.assert_allclose(threaded.boxes, plain.boxes, atol=1.0)
        assert threaded.masks.shape == plain.masks.shape == image.shape[:2] + (len(plain),)
        assert (threaded.masks != plain.masks).mean() < 1e-3


def test_other_tensorflow_users_keep_eager_mode(dog_detector: MaskRCNNDetector) -> None:
    """pixellib switches eager execution off for the whole process at import; the backend must
    not let it, or the YOLOv5 backend's TensorFlow runner would break in the same process."""
    import tensorflow as tf

    dog_detector.load()
    assert tf.executing_eagerly()
    doubled = tf.function(lambda x: x * 2)(tf.constant([1.0, 2.0]))
    assert doubled.numpy().tolist() == [2.0, 4.0]


def test_missing_weights_file_fails_with_how_to_get_it(tmp_path: Path, coco_dev_dir: Path) -> None:
    detector = MaskRCNNDetector(tmp_path)
    for call in (detector.load, lambda: detector.detect(_rgb(coco_dev_dir, LANDSCAPE_PHOTO))):
        with pytest.raises(WeightsMissingError) as error:
            call()
        assert MASKRCNN_FILENAME in str(error.value)
        assert "./get_data.sh --only weights" in str(error.value)
    assert not detector.loaded


def test_a_keras_file_of_another_model_is_refused_before_building(tmp_path: Path) -> None:
    with h5py.File(tmp_path / MASKRCNN_FILENAME, "w") as handle:
        handle.attrs["layer_names"] = [b"dense"]
        layer = handle.create_group("dense")
        layer.attrs["weight_names"] = [b"dense/kernel:0"]
        layer.create_dataset("dense/kernel:0", data=np.zeros((4, 2), dtype=np.float32))
    detector = MaskRCNNDetector(tmp_path)

    with pytest.raises(DetectorError, match="not a Mask R-CNN weights file.*mrcnn_class_logits"):
        detector.load()
    assert not detector.loaded


def test_a_file_that_is_not_hdf5_is_refused(tmp_path: Path) -> None:
    (tmp_path / MASKRCNN_FILENAME).write_text("<html>rate limited</html>")

    with pytest.raises(DetectorError, match="not an HDF5 file"):
        MaskRCNNDetector(tmp_path).load()


@pytest.mark.parametrize(
    "arguments",
    [{"min_confidence": 1.5}, {"image_max_dim": 1000}, {"image_max_dim": 512, "image_min_dim": 800}],
)
def test_invalid_settings_are_refused_at_construction(tmp_path: Path, arguments: dict) -> None:
    with pytest.raises(ValueError):
        MaskRCNNDetector(tmp_path, **arguments)
