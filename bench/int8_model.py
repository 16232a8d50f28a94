"""Static INT8 quantization of the YOLOv5s ONNX conversion: the study behind the ``fast``
profile that is not offered (it lives in bench/, not in the package, for that reason).

``quantize_yolov5`` writes an INT8 copy of ``yolov5s-heads.onnx`` with ONNX Runtime's
``quantize_static``. Activation ranges come from calibration photos letterboxed exactly as
the detector letterboxes them (``yolov5.letterbox``, rectangular, longest side 640), so the
ranges are those of the inputs the model will see.

Some layers may stay in float (``keep_float``), by group:

- ``heads``: the three detection convolutions and the sigmoid after each (the scores the
  ranking uses);
- ``first``: the first convolution (it sees the raw pixels) and its SiLU;
- ``last``: the convolution (and its SiLU) feeding each detection head.

The defaults are the best measured by ``bench/quantize.py`` (coco_dev, calibrated on 100
photos, scored on the other 300, for two disjoint calibration pools; its docstring has the
table): percentile calibration (99.999th), per-tensor weights, all three groups in float
lose 0.0028 and 0.0040 NDCG@30 against float at about 1.5× the speed, where MinMax with
everything INT8 loses 0.014. Keeping only the heads in float barely helps (-0.0135): the loss
comes from the backbone's activation ranges, which MinMax stretches to rare outliers. No
variant stays reliably within the 0.003 the ``fast`` profile needed, so it is not offered.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recommender.detection.base import DetectorError
from recommender.detection.yolov5 import DEFAULT_INPUT_SIZE, letterbox
from recommender.images import read_image_file

# Groups of layers that can be kept in float (see the module docstring).
FLOAT_GROUPS = ("heads", "first", "last")
# Our names → onnxruntime.quantization's CalibrationMethod and QuantFormat members.
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
FORMATS = {"qdq": "QDQ", "qoperator": "QOperator"}
DEFAULT_KEEP_FLOAT = ("heads", "first", "last")
DEFAULT_METHOD = "percentile"
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def calibration_photos(folder: str | os.PathLike[str], count: int, *, skip: Iterable[str] = ()) -> list[Path]:
    """``count`` photos of ``folder`` spread evenly over its sorted file names, none named in
    ``skip`` (so photos used for scoring can be kept out). Deterministic."""
    skipped = set(skip)
    paths = sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.name not in skipped
    )
    if count < 1 or len(paths) < count:
        raise DetectorError(f"{folder} has {len(paths)} usable calibration photos, {count} wanted")
    # Evenly spaced rather than the first ones: file names often follow the order of shooting.
    picks = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [paths[i] for i in picks]


def _calibration_reader(photos: Sequence[Path], input_name: str, input_size: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class LetterboxedPhotos(CalibrationDataReader):
        """One photo per batch, letterboxed as the detector does; ``set_range`` lets the
        calibrator take them one by one."""

        def __init__(self) -> None:
            self.start, self.end = 0, len(photos)
            self.position = 0

        def __len__(self) -> int:
            return len(photos)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end = start_index, min(end_index, len(photos))
            self.position = self.start

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.position >= self.end:
                return None
            rgb = read_image_file(photos[self.position]).rgb
            self.position += 1
            batch, _, _ = letterbox(rgb, input_size, rect=True)
            return {input_name: batch}

    return LetterboxedPhotos()


def _consumers(model: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _producer(model: Any) -> dict[str, Any]:
    return {out: node for node in model.graph.node for out in node.output}


def _with_silu(node: Any, consumers: dict[str, list[Any]]) -> list[Any]:
    """A convolution and the Sigmoid and Mul of the SiLU that follows it, when there is one."""
    after = consumers.get(node.output[0], [])
    silu = [n for n in after if n.op_type in ("Sigmoid", "Mul")]
    return [node, *silu]


def _skip_layout(node: Any, producers: dict[str, Any]) -> Any:
    """The first node upstream of ``node`` that is not a Transpose (tf2onnx's NCHW↔NHWC)."""
    while node.op_type == "Transpose" and node.input[0] in producers:
        node = producers[node.input[0]]
    return node


def name_nodes(model: Any) -> None:
    """Give every unnamed node a stable name: ``nodes_to_exclude`` can only name nodes, and
    tf2onnx leaves the final sigmoids of the heads unnamed."""
    taken = {node.name for node in model.graph.node if node.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{node.output[0]}" if node.output else f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def float_nodes(model: Any, groups: Iterable[str]) -> list[str]:
    """Names of the nodes of ``groups`` (see FLOAT_GROUPS) in a named YOLOv5s heads model."""
    groups = set(groups)
    unknown = groups - set(FLOAT_GROUPS)
    if unknown:
        raise DetectorError(f"unknown layer group(s) {sorted(unknown)}: choose among {', '.join(FLOAT_GROUPS)}")
    producers, consumers = _producer(model), _consumers(model)
    # Each output is Sigmoid(Transpose(Conv(...))): walk back from it to the head's conv.
    head_sigmoids = [producers[output.name] for output in model.graph.output]
    head_convs = [_skip_layout(producers[s.input[0]], producers) for s in head_sigmoids]
    if any(conv.op_type != "Conv" for conv in head_convs):
        raise DetectorError("the model's outputs are not sigmoids of convolutions: not a YOLOv5s heads model")
    chosen: list[Any] = []
    if "heads" in groups:
        chosen += head_convs + head_sigmoids
    if "first" in groups:
        first = next(node for node in model.graph.node if node.op_type == "Conv")
        chosen += _with_silu(first, consumers)
    if "last" in groups:
        for conv in head_convs:
            # The head's input is the Mul of the preceding SiLU; its conv is the Mul's input.
            mul = producers[conv.input[0]]
            before = _skip_layout(producers[mul.input[0]], producers)
            if mul.op_type == "Mul" and before.op_type == "Conv":
                chosen += _with_silu(before, consumers)
    return sorted({node.name for node in chosen})


def quantize_yolov5(
    float_model: str | os.PathLike[str],
    photos: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    method: str = DEFAULT_METHOD,
    per_channel: bool = False,
    keep_float: Iterable[str] = DEFAULT_KEEP_FLOAT,
    quant_format: str = "qdq",
    op_types: Sequence[str] | None = None,
    percentile: float = 99.999,
    input_size: int = DEFAULT_INPUT_SIZE,
    calibration_cache: str | os.PathLike[str] | None = None,
) -> Path:
    """Write an INT8 (u8 activations, s8 weights) copy of ``float_model`` to ``output``.

    ``photos`` calibrate the activation ranges; ``method`` is minmax, entropy or percentile
    (of |activation|, ``percentile``). ``keep_float`` names the layer groups left in float.
    ``calibration_cache`` (optional, a JSON file) stores the ranges so variants that differ
    only in kept layers, per-channel or format reuse one calibration; it must be specific to
    photos, method, percentile and ``op_types`` (the operator types quantized; default:
    every type ONNX Runtime can).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise DetectorError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")
    if quant_format not in FORMATS:
        raise DetectorError(f"unknown format {quant_format!r}: choose one of {', '.join(FORMATS)}")
    if not photos:
        raise DetectorError("quantization needs at least one calibration photo")
    model = onnx.load(str(float_model))
    name_nodes(model)
    excluded = float_nodes(model, keep_float)
    input_name = model.graph.input[0].name
    reader = _calibration_reader([Path(p) for p in photos], input_name, input_size)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp")
    quantize_static(
        model,
        str(temporary),
        reader,
        quant_format=getattr(QuantFormat, FORMATS[quant_format]),
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        op_types_to_quantize=list(op_types) if op_types else None,
        calibrate_method=getattr(CalibrationMethod, METHODS[method]),
        calibration_cache_path=None if calibration_cache is None else str(calibration_cache),
        # Photos go to the calibrator one at a time (stride 1): histogram calibrators stack a
        # chunk's activations into one array, which fails when letterboxed shapes differ.
        extra_options={"CalibPercentile": percentile, "CalibStridedMinMax": 1},
    )
    # Written aside and moved into place: an interrupted run never leaves a half model.
    os.replace(temporary, output)
    return output
