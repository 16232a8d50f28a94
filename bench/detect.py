"""Detection speed on a folder of photos: decode and inference timed separately, per detector.

    .venv/bin/python bench/detect.py [IMAGES_DIR] [--limit N] [--compare N] [--maskrcnn-limit N]

Everything runs in one process, one image at a time (the way ingest calls the detector).
Reports, for each available detector: median ms per image for decoding and for inference,
and images per second (inference alone, decode + inference in sequence, and with decoding
prefetched by one background thread). Then YOLOv5s on TensorFlow vs ONNX Runtime over the
same 640×640 inputs, and ONNX Runtime on the rectangular inputs (640, and the detector's
default size), in alternating blocks of photos so that load from other processes hits all
alike, with the ratios of medians.
The load average is printed: on a shared machine it explains outliers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from recommender.config import Settings
from recommender.detection import DetectorError, create_detector, resolve
from recommender.detection.weights import maskrcnn_weights_path
from recommender.detection.yolov5 import YoloV5Detector
from recommender.images import read_image_file

DEFAULT_IMAGES = Path(os.environ.get("SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "data" / "coco_dev" / "images"


def _ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def decode_all(paths: list[Path]) -> tuple[list[np.ndarray], list[float]]:
    images, seconds = [], []
    for path in paths:
        t0 = time.perf_counter()
        images.append(read_image_file(path).rgb)
        seconds.append(time.perf_counter() - t0)
    return images, seconds


def bench_detector(detector, paths: list[Path], images: list[np.ndarray], decode_s: list[float]) -> dict:
    t0 = time.perf_counter()
    detector.load()
    load_s = time.perf_counter() - t0
    infer_s = []
    for rgb in images:
        t0 = time.perf_counter()
        detector.detect(rgb)
        infer_s.append(time.perf_counter() - t0)
    # Decode of image i+1 overlaps inference of image i (Pillow releases the GIL).
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        for decoded in pool.map(read_image_file, paths):
            detector.detect(decoded.rgb)
    pipelined_s = time.perf_counter() - t0
    n = len(images)
    return {
        "detector": detector.name,
        "runtime": getattr(detector, "runtime", None),
        "images": n,
        "load_s": round(load_s, 2),
        "decode_median_ms": round(_ms(decode_s[:n]), 1),
        "inference_median_ms": round(_ms(infer_s), 1),
        "inference_images_per_s": round(n / sum(infer_s), 2),
        "sequential_images_per_s": round(n / (sum(infer_s) + sum(decode_s[:n])), 2),
        "prefetch_images_per_s": round(n / pipelined_s, 2),
    }


def compare_runtimes(weights_dir: Path, images: list[np.ndarray]) -> dict:
    """TensorFlow vs ONNX Runtime on the same 640×640 input, and ORT's rectangular input."""
    detectors = {
        "tensorflow": YoloV5Detector(weights_dir, runtime="tensorflow"),
        "onnxruntime_640_square": YoloV5Detector(weights_dir, runtime="onnxruntime", rect=False, input_size=640),
        "onnxruntime_640_rect": YoloV5Detector(weights_dir, runtime="onnxruntime", input_size=640),
        "onnxruntime_default": YoloV5Detector(weights_dir, runtime="onnxruntime"),
    }
    for detector in detectors.values():
        detector.load()
    times: dict[str, list[float]] = {key: [] for key in detectors}
    outputs: dict[str, list[np.ndarray]] = {key: [] for key in detectors}
    # Blocks of photos, the runtime order rotating per block, so that drifting load from other
    # processes hits every runtime alike, while one runtime's idle worker threads (TensorFlow's
    # keep spinning for a while after a call) rarely overlap another's work.
    block = 10
    for b, start in enumerate(range(0, len(images), block)):
        keys = list(detectors)
        keys = keys[b % len(keys) :] + keys[: b % len(keys)]
        for key in keys:
            for rgb in images[start : start + block]:
                t0 = time.perf_counter()
                found = detectors[key].detect(rgb)
                times[key].append(time.perf_counter() - t0)
                outputs[key].append(found.class_scores)
    max_diff = float(np.abs(np.array(outputs["tensorflow"]) - np.array(outputs["onnxruntime_640_square"])).max())
    med = {key: _ms(values) for key, values in times.items()}
    return {
        "images": len(images),
        "default_input": f"{detectors['onnxruntime_default'].input_size} rect",
        **{f"{key}_median_ms": round(value, 1) for key, value in med.items()},
        "ratio_tf_over_ort_640_square": round(med["tensorflow"] / med["onnxruntime_640_square"], 2),
        "ratio_ort_640_square_over_default": round(med["onnxruntime_640_square"] / med["onnxruntime_default"], 2),
        "max_abs_diff_class_scores_tf_vs_ort_640_square": max_diff,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images_dir", nargs="?", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--weights-dir", type=Path, default=None, help="default: WEIGHTS_DIR")
    parser.add_argument("--limit", type=int, default=0, help="use the first N photos (default: all)")
    parser.add_argument("--compare", type=int, default=60, help="photos for TF vs ONNX Runtime (0: skip)")
    parser.add_argument("--maskrcnn-limit", type=int, default=20, help="photos for Mask R-CNN (slow)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)

    weights_dir = args.weights_dir or Settings.from_env().resolved_weights_dir
    paths = sorted(p for p in args.images_dir.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if args.limit:
        paths = paths[: args.limit]
    if not paths:
        print(f"no photos in {args.images_dir}", file=sys.stderr)
        return 2
    report: dict = {"dataset": str(args.images_dir), "photos": len(paths), "cpus": os.cpu_count(), "loadavg_start": _loadavg()}
    images, decode_s = decode_all(paths)

    report["yolov5s"] = bench_detector(create_detector(resolve("yolov5s"), weights_dir), paths, images, decode_s)
    try:
        maskrcnn_weights_path(weights_dir)
    except DetectorError as exc:
        report["maskrcnn"] = {"skipped": f"no weights ({exc.__class__.__name__})"}
    else:
        n = min(args.maskrcnn_limit, len(paths))
        try:
            report["maskrcnn"] = bench_detector(create_detector("maskrcnn", weights_dir), paths[:n], images[:n], decode_s)
        except (DetectorError, ImportError) as exc:
            report["maskrcnn"] = {"skipped": str(exc).splitlines()[0]}
    if args.compare:
        report["tf_vs_ort"] = compare_runtimes(weights_dir, images[: args.compare])
    report["loadavg_end"] = _loadavg()

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"dataset {report['dataset']}: {report['photos']} photos, {report['cpus']} CPUs, load average {report['loadavg_start']} → {report['loadavg_end']}")
    for key in ("yolov5s", "maskrcnn"):
        row = report[key]
        if "skipped" in row:
            print(f"{key}: skipped: {row['skipped']}")
            continue
        print(
            f"{key} ({row['runtime'] or 'default runtime'}), {row['images']} photos, load {row['load_s']} s: "
            f"decode median {row['decode_median_ms']} ms, inference median {row['inference_median_ms']} ms; "
            f"images/s: inference {row['inference_images_per_s']}, decode+inference {row['sequential_images_per_s']}, "
            f"with decode prefetch {row['prefetch_images_per_s']}"
        )
    if "tf_vs_ort" in report:
        c = report["tf_vs_ort"]
        print(
            f"yolov5s runtimes on {c['images']} photos (alternating blocks), median ms per image: "
            f"TensorFlow 640x640 {c['tensorflow_median_ms']}, ONNX Runtime 640x640 {c['onnxruntime_640_square_median_ms']}, "
            f"ONNX Runtime 640 rectangular {c['onnxruntime_640_rect_median_ms']}, "
            f"ONNX Runtime default ({c['default_input']}) {c['onnxruntime_default_median_ms']}"
        )
        print(
            f"  ratio TF/ORT on the same 640x640 input {c['ratio_tf_over_ort_640_square']}x; "
            f"ORT 640x640 / ORT default {c['ratio_ort_640_square_over_default']}x; "
            f"max |class score difference| TF vs ORT 640x640 {c['max_abs_diff_class_scores_tf_vs_ort_640_square']:.2e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
