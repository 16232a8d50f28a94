"""Near-identical photos: a perceptual hash per photo, and folding a ranked list by it.

The hash is imagehash's DCT perceptual hash (64 bits) of the upright decoded pixels. Photos
whose hashes differ in at most ``NEAR_DUPLICATE_BITS`` bits are near-identical: the same shot
re-encoded, resized or slightly cropped, or a burst frame. The threshold was chosen on coco_dev
plus generated copies (``bench/near_duplicates.py``; precision and recall in the README).

Folding (``fold``) walks a ranked list best first: an item within the threshold of an earlier
*leader* joins the first such leader's group; otherwise it leads a group of its own. Leaders
keep their rank; nothing is reordered, dropped or repeated.
"""

from __future__ import annotations

from collections.abc import Sequence

import imagehash
import numpy as np
from PIL import Image

NEAR_DUPLICATE_BITS = 12
_UNSIGNED = (1 << 64) - 1


def perceptual_hash(rgb: np.ndarray) -> int:
    """64-bit DCT hash of uint8 H×W×3 pixels, as a signed 64-bit integer (a BIGINT column)."""
    bits = imagehash.phash(Image.fromarray(rgb)).hash.flatten()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & _UNSIGNED).bit_count()


def fold(hashes: Sequence[int | None], max_bits: int = NEAR_DUPLICATE_BITS) -> list[list[int]]:
    """Groups of positions of a ranked list: each group is [leader, folded...], leaders in rank order.

    An item without a hash (not computed yet) is never folded and folds nothing.
    """
    groups: list[list[int]] = []
    leaders: list[tuple[int, int]] = []  # (hash, group number)
    for position, value in enumerate(hashes):
        home = None
        if value is not None:
            home = next((g for h, g in leaders if hamming(h, value) <= max_bits), None)
        if home is None:
            groups.append([position])
            if value is not None:
                leaders.append((value, len(groups) - 1))
        else:
            groups[home].append(position)
    return groups
