"""Choosing the near-duplicate threshold: perceptual-hash distances of coco_dev photos and generated copies.

    .venv/bin/python bench/near_duplicates.py [--limit 400] [--max-bits 16]

For every coco_dev photo it makes near-identical copies (JPEG re-encoded at quality 55 and 30,
resized to 1/2 and 1/4, cropped by 3 % on every side, cropped by 6 % on two sides), hashes
everything with ``neardup.perceptual_hash`` (what ingest stores), and counts, for each
threshold t, the pairs of photos within t bits:

* positives: pairs of one family (a photo and its copies, or two copies of one photo): these
  should be folded together, copy against copy included, because a result list may hold two
  copies without their original;
* negatives: pairs of different coco_dev photos (or their copies).

Precision = folded positive pairs / all folded pairs; recall = folded positive pairs / all
positive pairs. Also reported per kind of copy (against its original).
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from recommender.neardup import NEAR_DUPLICATE_BITS, perceptual_hash

REPO = Path(__file__).resolve().parents[1]
IMAGES = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")) / "data" / "coco_dev" / "images"


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")


def copies(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    return {
        "jpeg q55": _jpeg(image, 55),
        "jpeg q30": _jpeg(image, 30),
        "resized 1/2": _jpeg(image.resize((w // 2, h // 2), Image.Resampling.LANCZOS), 90),
        "resized 1/4": _jpeg(image.resize((w // 4, h // 4), Image.Resampling.LANCZOS), 90),
        "crop 3% all sides": _jpeg(image.crop((int(0.03 * w), int(0.03 * h), w - int(0.03 * w), h - int(0.03 * h))), 90),
        "crop 6% two sides": _jpeg(image.crop((int(0.06 * w), int(0.06 * h), w, h)), 90),
    }


def popcount64(x: np.ndarray) -> np.ndarray:
    x = x.view(np.uint64)
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--max-bits", type=int, default=16)
    args = parser.parse_args()
    hashes, family, kinds = [], [], []
    for f, path in enumerate(sorted(IMAGES.glob("*.jpg"))[: args.limit]):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        for kind, im in [("original", image), *copies(image).items()]:
            hashes.append(perceptual_hash(np.asarray(im)))
            family.append(f)
            kinds.append(kind)
    h = np.array(hashes, dtype=np.int64)
    fam = np.array(family)
    bits = popcount64(h[:, None] ^ h[None, :])
    upper = np.triu(np.ones_like(bits, dtype=bool), k=1)
    same = (fam[:, None] == fam[None, :]) & upper
    other = (fam[:, None] != fam[None, :]) & upper
    print(f"{fam.max() + 1} photos, {len(h)} hashes, {int(same.sum())} positive and {int(other.sum())} negative pairs\n")
    print("| threshold (bits) | folded pairs | precision | recall | false pairs |")
    print("|---|---|---|---|---|")
    for t in range(0, args.max_bits + 1):
        tp = int((same & (bits <= t)).sum())
        fp = int((other & (bits <= t)).sum())
        mark = " (chosen)" if t == NEAR_DUPLICATE_BITS else ""
        print(f"| {t}{mark} | {tp + fp} | {tp / max(1, tp + fp):.4f} | {tp / same.sum():.4f} | {fp} |")
    print(f"\nRecall per kind of copy against its original, at {NEAR_DUPLICATE_BITS} bits:")
    kinds_arr = np.array(kinds)
    originals = np.flatnonzero(kinds_arr == "original")
    for kind in dict.fromkeys(kinds):
        if kind == "original":
            continue
        rows = np.flatnonzero(kinds_arr == kind)
        d = bits[rows, originals[fam[rows]]]
        print(f"  {kind:<18} {np.mean(d <= NEAR_DUPLICATE_BITS):.3f}   median {np.median(d):.0f} bits, max {d.max()}")


if __name__ == "__main__":
    main()
