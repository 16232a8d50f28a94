"""One JSON shape per resource, used by the HTTP API and by the CLI's ``--json`` alike.

``root`` is the URL prefix the app is mounted under (empty for the usual root mount). Image URLs
carry ``?v=`` and the first 16 hex digits of the content's SHA-256: a name can come back with
other bytes after a delete, and a versioned URL is what lets browsers cache the bytes for good.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .service import (
    ClassCount,
    CollectionStatus,
    DetectedObject,
    FoundImage,
    ImageDetections,
    ImageInfo,
    IngestResult,
    SearchPage,
    SimilarImage,
    SimilarPage,
)

VERSION_LENGTH = 16


def version_of(sha256: str) -> str:
    return sha256[:VERSION_LENGTH]


def image_urls(name: str, sha256: str, root: str = "") -> dict[str, str]:
    path, version = f"{root}/images/{quote(name, safe='')}", version_of(sha256)
    return {"url": f"{path}?v={version}", "thumb_url": f"{path}/thumb?v={version}"}


def image_json(image: ImageInfo, root: str = "") -> dict[str, Any]:
    return {"name": image.name, **image_urls(image.name, image.sha256, root), "width": image.width, "height": image.height}


def detection_json(found: DetectedObject) -> dict[str, Any]:
    return {
        "class": found.class_name,
        "class_id": found.class_id,
        "score": round(found.score, 4),
        "box": [round(v, 1) for v in found.box],
    }


def detections_json(view: ImageDetections, root: str = "") -> dict[str, Any]:
    return {**image_json(view.image, root), "detector": view.detector, "detections": [detection_json(d) for d in view.detections]}


def similar_result_json(r: SimilarImage, root: str = "") -> dict[str, Any]:
    return {
        "name": r.name,
        **image_urls(r.name, r.sha256, root),
        "distance": round(r.distance, 6),
        "similarity": round(r.similarity, 6),
        "shared_classes": r.shared_classes,
        "classes": r.classes,
        "why": r.why,
        "contributions": [{"class": c.class_name, "share": round(c.share, 4)} for c in r.contributions],
        "near_duplicates": [similar_result_json(d, root) for d in r.near_duplicates],
    }


def _paging(page: SimilarPage | SearchPage) -> dict[str, Any]:
    return {"detector": page.detector, "page": page.page, "per_page": page.per_page, "total": page.total}


def similar_json(page: SimilarPage, root: str = "") -> dict[str, Any]:
    return {
        "query": page.query,
        "query_classes": page.query_classes,
        **_paging(page),
        "constraints": {**page.ask.names(), "min_similarity": page.ask.min_similarity, "collapse": page.collapse},
        "results": [similar_result_json(r, root) for r in page.results],
    }


def found_json(r: FoundImage, root: str = "") -> dict[str, Any]:
    return {
        "name": r.name,
        **image_urls(r.name, r.sha256, root),
        "classes": r.classes,
        "confidence": round(r.confidence, 6),
        "scores": r.scores,
        "near_duplicates": [found_json(d, root) for d in r.near_duplicates],
    }


def search_json(page: SearchPage, root: str = "") -> dict[str, Any]:
    return {
        "q": page.query,
        "with": page.with_classes,
        "without": page.without_classes,
        **_paging(page),
        "collapse": page.collapse,
        "results": [found_json(r, root) for r in page.results],
    }


def classes_json(counts: list[ClassCount]) -> dict[str, Any]:
    return {"classes": [{"class": c.name, "class_id": c.class_id, "images": c.images} for c in counts]}


def upload_json(result: IngestResult, similar: SimilarPage, root: str = "") -> dict[str, Any]:
    return {
        **image_json(result.image, root),
        "duplicate": result.duplicate,
        "detector": result.detector,
        "detections": [detection_json(d) for d in result.detections],
        "similar": similar_json(similar, root),
    }


def status_json(status: CollectionStatus) -> dict[str, Any]:
    return {
        "detector": status.detector,
        "images": status.images,
        "indexed": status.indexed,
        "feed_position": status.position,
        "feed_behind": status.behind,
    }
