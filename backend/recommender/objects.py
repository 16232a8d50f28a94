"""Asking by objects: class names as people type them, and the constraints of a similarity query.

* ``resolve_class("Dogs")`` → 17: case, spaces/underscores, plurals and a few common other
  words ("people", "sofa") are forgiven; anything else raises ``UnknownClass`` naming the
  closest class names and listing every valid one.
* ``parse_search("dog frisbee -person")`` → (required ids, excluded ids). Multi-word names
  ("teddy bear", "hot dog") are matched longest first; ``-`` in front of a name excludes it.
* ``Ask``: what a similarity query may add to "like this photo": classes every result must
  show (``with``) or must not show (``without``), a ``min_similarity`` cut-off, and classes to
  ``add`` to or ``remove`` from the query photo before the lookup.

"Shows a class" is the rule the page's chips use: a box of that class scored at or above the
display threshold. The index tests it with a class bit mask during its exact scan, so totals
and pages of a filtered query are exact.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .classes import CLASS_NAMES, class_name
from .errors import UserError, error_kind

UnknownClass = error_kind("UnknownClass", "unknown_class", 422, "A word that names no COCO class.")
InvalidAsk = error_kind("InvalidAsk", "invalid_query", 422, "Constraints that contradict each other or are out of range.")

_NAMES = CLASS_NAMES[1:]
_ID_BY_NAME = {name: i for i, name in enumerate(CLASS_NAMES) if i > 0}
# Other words people use for a class (singular; plurals are handled by the rules below).
_SYNONYMS = {
    "people": "person", "man": "person", "men": "person", "woman": "person", "women": "person",
    "child": "person", "children": "person", "mice": "mouse", "ski": "skis", "hair dryer": "hair drier",
    "television": "tv", "motorbike": "motorcycle", "aeroplane": "airplane", "plane": "airplane",
    "sofa": "couch", "cellphone": "cell phone", "phone": "cell phone", "table": "dining table",
    "doughnut": "donut", "bike": "bicycle", "ball": "sports ball", "glass": "wine glass",
}
_LONGEST_NAME_WORDS = max(len(n.split()) for n in _NAMES)


def _normal(word: str) -> str:
    return " ".join(word.replace("_", " ").lower().split())


def _singulars(name: str) -> list[str]:
    """Candidate singular forms of a (possibly multi-word) name: the last word changes."""
    head, _, last = name.rpartition(" ")
    forms = []
    for suffix, replacement in (("ies", "y"), ("ves", "fe"), ("ves", "f"), ("es", ""), ("s", "")):
        if last.endswith(suffix) and len(last) > len(suffix) + 1:
            forms.append(last[: -len(suffix)] + replacement)
    return [f"{head} {form}" if head else form for form in forms]


def lookup_class(word: str) -> int | None:
    """Class id of a name as typed, or None."""
    name = _normal(word)
    for candidate in [name, *_singulars(name)]:
        candidate = _SYNONYMS.get(candidate, candidate)
        if candidate in _ID_BY_NAME:
            return _ID_BY_NAME[candidate]
    return None


def closest_names(word: str, n: int = 3) -> list[str]:
    name = _normal(word)
    found = difflib.get_close_matches(name, _NAMES, n=n, cutoff=0.5)
    # "bear" should suggest "teddy bear" too: names that contain the word.
    found += [c for c in _NAMES if name and re.search(rf"\b{re.escape(name)}", c) and c not in found]
    return found[:n]


def unknown_class(word: str) -> UserError:
    close = closest_names(word)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownClass(f"Unknown class {word.strip()!r}.{hint} Valid class names: {', '.join(_NAMES)}.")


def resolve_class(word: str) -> int:
    found = lookup_class(word)
    if found is None:
        raise unknown_class(word)
    return found


def resolve_classes(values: Iterable[str] | str | None) -> tuple[int, ...]:
    """Class ids of comma-separated names (one string, or several), sorted and distinct."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    ids = {resolve_class(part) for value in values for part in value.split(",") if part.strip()}
    return tuple(sorted(ids))


def parse_search(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(required, excluded) class ids of a search such as ``"dog frisbee -person"``."""
    tokens = text.replace(",", " ").split()
    required: set[int] = set()
    excluded: set[int] = set()
    i = 0
    while i < len(tokens):
        negative = tokens[i].startswith("-")
        first = tokens[i].lstrip("-")
        if not first:  # a lone "-"
            i += 1
            continue
        for length in range(_LONGEST_NAME_WORDS, 0, -1):
            words = tokens[i + 1 : i + length]
            if len(words) != length - 1 or any(w.startswith("-") for w in words):
                continue
            found = lookup_class(" ".join([first, *words]))
            if found is not None:
                (excluded if negative else required).add(found)
                i += length
                break
        else:
            raise unknown_class(first)
    if not required and not excluded:
        raise InvalidAsk("Name at least one object class to search for, e.g. 'dog frisbee -person'.")
    if required & excluded:
        raise InvalidAsk(f"{_names(required & excluded)} cannot be both asked for and excluded.")
    return tuple(sorted(required)), tuple(sorted(excluded))


def _names(ids: Iterable[int]) -> str:
    return ", ".join(class_name(c) for c in sorted(ids))


# ------------------------------------------------------------------------- similarity scale


def similarity_of(distance: float | np.ndarray) -> float | np.ndarray:
    """Similarity 1 - d²/2 of a distance between unit-length points (the default ranking's
    Ochiai similarity; cosine for the other unit-length rankings)."""
    return 1.0 - np.square(distance) / 2.0


def distance_for(min_similarity: float) -> float:
    """The largest distance whose similarity is at least ``min_similarity``."""
    return math.sqrt(max(0.0, 2.0 * (1.0 - min_similarity)))


# ------------------------------------------------------------------------- constraints


@dataclass(frozen=True)
class Ask:
    """Constraints on a similarity query; every field empty means "just like this photo"."""

    with_ids: tuple[int, ...] = ()
    without_ids: tuple[int, ...] = ()
    min_similarity: float | None = None
    add_ids: tuple[int, ...] = ()
    remove_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, *, with_: Sequence[str] | str | None = None, without: Sequence[str] | str | None = None,
           min_similarity: float | None = None, add: Sequence[str] | str | None = None,
           remove: Sequence[str] | str | None = None) -> Ask:
        """Validated constraints from class names as typed (comma-separated or repeated)."""
        ask = cls(resolve_classes(with_), resolve_classes(without), min_similarity,
                  resolve_classes(add), resolve_classes(remove))
        ask.check()
        return ask

    def check(self) -> None:
        both = set(self.with_ids) & set(self.without_ids)
        if both:
            raise InvalidAsk(f"{_names(both)} cannot be both required (with) and excluded (without).")
        moved = set(self.add_ids) & set(self.remove_ids)
        if moved:
            raise InvalidAsk(f"{_names(moved)} cannot be both added and removed.")
        s = self.min_similarity
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s <= 1.0):
            raise InvalidAsk(f"min_similarity must be a number from 0 to 1, got {s!r}.")

    @property
    def max_distance(self) -> float | None:
        return None if self.min_similarity is None else distance_for(float(self.min_similarity))

    def moved(self, raw: np.ndarray) -> np.ndarray:
        """The query's raw vector with the added classes certain and the removed ones absent.

        A raw score of 1 calibrates to presence 1 and a score of 0 to presence 0 whatever
        the calibration, so this sets the calibrated presence itself.
        """
        vector = np.array(raw, dtype=np.float32, copy=True)
        vector[list(self.add_ids)] = 1.0
        vector[list(self.remove_ids)] = 0.0
        return vector

    def names(self) -> dict[str, list[str]]:
        return {
            "with": [class_name(c) for c in self.with_ids],
            "without": [class_name(c) for c in self.without_ids],
            "add": [class_name(c) for c in self.add_ids],
            "remove": [class_name(c) for c in self.remove_ids],
        }


NO_ASK = Ask()
