"""Asking by objects (issue 14), through the JSON API on SQLite and PostgreSQL, real YOLOv5s, coco_dev.

Each check compares the service with a brute force computed here from what the API itself
shows (detections, stored vectors), never with numbers copied from a previous run.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import _create_postgres_database
from recommender.cli import main as cli
from recommender.detection import Detector, resolve
from recommender.neardup import NEAR_DUPLICATE_BITS, hamming, perceptual_hash
from recommender.service import DISPLAY_THRESHOLD
from recommender.vectors import detector_ranking
from test_api import Api, assert_error, make_api, upload, yolo  # noqa: F401  (yolo: fixture)

# The ranking and calibration of the detector the api serves (DETECTOR=yolov5s, default profile).
RANKING = detector_ranking(resolve("yolov5s").name)

GALLERY = 80


def near_copies(path: Path) -> dict[str, bytes]:
    """Re-encoded, resized and slightly cropped copies of a photo, as JPEG bytes."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    w, h = image.size

    def jpeg(im: Image.Image, quality: int) -> bytes:
        out = io.BytesIO()
        im.save(out, "JPEG", quality=quality)
        return out.getvalue()

    return {
        "reencoded": jpeg(image, 55),
        "resized": jpeg(image.resize((w // 2, h // 2), Image.Resampling.LANCZOS), 90),
        "cropped": jpeg(image.crop((int(0.03 * w), int(0.03 * h), w - int(0.03 * w), h - int(0.03 * h))), 90),
    }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, yolo: Detector,  # noqa: F811
        coco_dev_images: list[Path]):
    data_dir = tmp_path_factory.mktemp(f"objects-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'test.sqlite3'}"
    else:
        url, drop = _create_postgres_database()
        request.addfinalizer(drop)
    built = make_api(url, data_dir / "data", yolo, coco_dev_images[:GALLERY])
    built.detections = {n: built.client.get(f"/images/{n}/detections").get_json()["detections"] for n in built.gallery}
    yield built
    built.service.close()


def shown(api: Api, name: str) -> dict[str, float]:
    """Classes a photo shows by the chips' rule, with the best box score of each."""
    best: dict[str, float] = {}
    for d in api.detections[name]:
        if d["score"] >= DISPLAY_THRESHOLD:
            best[d["class"]] = max(best.get(d["class"], 0.0), d["score"])
    return best


def every_page(api: Api, url: str, per_page: int) -> tuple[list[dict], int]:
    results, page, totals = [], 1, set()
    while True:
        body = api.client.get(f"{url}{'&' if '?' in url else '?'}page={page}&per_page={per_page}").get_json()
        totals.add(body["total"])
        if not body["results"]:
            break
        results += body["results"]
        page += 1
    assert len(totals) == 1, "total changed between pages"
    return results, totals.pop()


def a_photo_with(api: Api, present: str, absent: str | None = None) -> str:
    return next(n for n in api.gallery if present in shown(api, n) and (absent is None or absent not in shown(api, n)))


# ----------------------------------------------------------------------------- filters


def test_with_and_without_return_exactly_the_photos_that_qualify(api: Api) -> None:
    query = a_photo_with(api, "person")
    for params, keep in [
        ("with=dog", lambda c: "dog" in c),
        ("without=person", lambda c: "person" not in c),
        ("with=Persons&without=car,dog", lambda c: "person" in c and "car" not in c and "dog" not in c),
    ]:
        body = api.client.get(f"/get_similar/{query}?{params}&per_page=100").get_json()
        expected = {n for n in api.gallery if n != query and keep(shown(api, n))}
        assert body["total"] == len(expected) > 0, params
        assert {r["name"] for r in body["results"]} == expected, params
        assert all(keep(set(r["classes"])) for r in body["results"])
        distances = [r["distance"] for r in body["results"]]
        assert distances == sorted(distances)
    assert api.client.get(f"/get_similar/{query}?with=persons").get_json()["constraints"]["with"] == ["person"]


def test_min_similarity_cuts_the_ranking_and_the_total(api: Api) -> None:
    query = a_photo_with(api, "person")
    everything = api.client.get(f"/get_similar/{query}?per_page=100").get_json()["results"]
    cut = 0.5
    body = api.client.get(f"/get_similar/{query}?min_similarity={cut}&per_page=100").get_json()
    kept = [r["name"] for r in everything if r["similarity"] >= cut]
    assert 0 < body["total"] == len(kept) < len(everything)
    assert [r["name"] for r in body["results"]] == kept
    for r in everything:  # similarity is 1 - d²/2 of the reported distance
        assert r["similarity"] == pytest.approx(1 - r["distance"] ** 2 / 2, abs=1e-5)


def test_paging_through_a_filtered_result_set_never_repeats_or_skips(api: Api) -> None:
    query = a_photo_with(api, "person")
    url = f"/get_similar/{query}?with=person&min_similarity=0.3"
    whole = api.client.get(f"{url}&per_page=100").get_json()
    for per_page in (1, 7, 30):
        paged, total = every_page(api, url, per_page)
        assert total == whole["total"]
        assert [r["name"] for r in paged] == [r["name"] for r in whole["results"]]


@pytest.mark.parametrize("params, status, code, words", [
    ("with=dgo", 422, "unknown_class", ["dog", "person", "toothbrush"]),
    ("without=unicorn", 422, "unknown_class", ["Valid class names"]),
    ("add=bear&remove=teddy", 422, "unknown_class", ["teddy bear"]),
    ("with=dog&without=dogs", 422, "invalid_query", ["dog"]),
    ("add=cat&remove=Cats", 422, "invalid_query", ["cat"]),
    ("min_similarity=1.5", 422, "invalid_query", ["0 to 1"]),
    ("min_similarity=-0.1", 422, "invalid_query", ["0 to 1"]),
    ("min_similarity=nan", 422, "invalid_query", ["0 to 1"]),
    ("min_similarity=high", 400, "bad_request", ["number"]),
    ("collapse=maybe", 400, "bad_request", ["collapse"]),
])
def test_bad_constraints_are_explained(api: Api, params: str, status: int, code: str, words: list[str]) -> None:
    error = assert_error(api.client.get(f"/get_similar/{api.gallery[0]}?{params}"), status, code)
    assert all(w in error["message"] for w in words), error["message"]


def test_an_upload_answers_its_first_page_under_the_constraints(api: Api, coco_dev_images: list[Path]) -> None:
    photo = coco_dev_images[GALLERY + 5]
    rejected = api.client.post("/upload_file?with=unicorn", data={"file_to_upload": (io.BytesIO(photo.read_bytes()), photo.name)},
                               content_type="multipart/form-data")
    assert_error(rejected, 422, "unknown_class")
    assert api.client.get(f"/images/{photo.name}").status_code == 404, "nothing is stored for a rejected ask"
    form = {"file_to_upload": (io.BytesIO(photo.read_bytes()), photo.name), "without": "person", "collapse": "1"}
    response = api.client.post("/upload_file?min_similarity=0.1", data=form, content_type="multipart/form-data")
    try:
        assert response.status_code == 201, response.get_json()
        similar = response.get_json()["similar"]
        assert similar["constraints"]["without"] == ["person"] and similar["constraints"]["min_similarity"] == 0.1
        assert similar["constraints"]["collapse"] is True
        expected = {n for n in api.gallery if "person" not in shown(api, n)}
        names = {r["name"] for r in similar["results"]} | {d["name"] for r in similar["results"] for d in r["near_duplicates"]}
        assert names <= expected and all(r["similarity"] >= 0.1 for r in similar["results"])
    finally:
        api.service.admin.delete(photo.name)


# ----------------------------------------------------------------------------- add / remove


def test_add_and_remove_move_the_query_before_the_lookup(api: Api) -> None:
    names, raw = api.service.queries.stored_vectors()
    row = {n: i for i, n in enumerate(names)}
    query = a_photo_with(api, "person", absent="dog")
    points = RANKING.index_transform(raw)
    for params, add, remove in [("add=dog", [17], []), ("remove=person", [], [1]), ("add=dogs&remove=people", [17], [1])]:
        moved = raw[row[query]].copy()
        moved[add], moved[remove] = 1.0, 0.0
        d2 = ((points - RANKING.query_transform(moved)) ** 2).sum(axis=1)
        brute = [names[i] for i in np.lexsort((np.arange(len(names)), d2)) if names[i] != query]
        body = api.client.get(f"/get_similar/{query}?{params}&per_page=100").get_json()
        assert [r["name"] for r in body["results"]] == brute, params
    def first_dog(params: str) -> int:
        results = api.client.get(f"/get_similar/{query}?per_page=100{params}").get_json()["results"]
        return next(i for i, r in enumerate(results) if "dog" in r["classes"])

    assert first_dog("&add=dog") < first_dog(""), "a dog photo moves up when the query gains a dog"


# ----------------------------------------------------------------------------- search, classes


def test_search_by_names_ranks_by_the_calibrated_presence_of_the_asked_classes(api: Api) -> None:
    body = api.client.get("/search?q=Dogs&per_page=100").get_json()
    with_dog = [n for n in api.gallery if "dog" in shown(api, n)]
    assert body["with"] == ["dog"] and body["total"] == len(with_dog) > 0
    assert {r["name"] for r in body["results"]} == set(with_dog)
    for r in body["results"]:
        p = RANKING.presence(np.array([[0.0, shown(api, r["name"])["dog"]]]))[0, 1]
        assert r["confidence"] == pytest.approx(p, abs=1e-4)
    confidence = [r["confidence"] for r in body["results"]]
    assert confidence == sorted(confidence, reverse=True)

    two = api.client.get("/search?q=person car -dog&per_page=100").get_json()
    expected = [n for n in api.gallery if {"person", "car"} <= set(shown(api, n)) and "dog" not in shown(api, n)]
    assert two["total"] == len(expected) > 0 and {r["name"] for r in two["results"]} == set(expected)
    for r in two["results"]:
        s = shown(api, r["name"])
        p = RANKING.presence(np.array([[0.0, s["person"], s["car"]]]))[0, 1:]
        assert r["confidence"] == pytest.approx(float(np.prod(p)), abs=1e-4)
    paged, total = every_page(api, "/search?q=person", 9)
    assert total == sum("person" in shown(api, n) for n in api.gallery)
    assert [r["name"] for r in paged] == [r["name"] for r in api.client.get("/search?q=person&per_page=100").get_json()["results"]]


@pytest.mark.parametrize("q, words", [("dgo frisbee", ["dog"]), ("teddy", ["teddy bear"]), ("", ["at least one"]),
                                      ("dog -dog", ["dog"])])
def test_search_explains_words_it_cannot_use(api: Api, q: str, words: list[str]) -> None:
    error = assert_error(api.client.get(f"/search?q={q}"), 422)
    assert all(w in error["message"] for w in words), error["message"]


def test_class_counts_are_the_photos_that_show_each_class(api: Api) -> None:
    counts = {c["class"]: c["images"] for c in api.client.get("/classes").get_json()["classes"]}
    assert len(counts) == 80
    for name in ("person", "dog", "car", "giraffe"):
        assert counts[name] == sum(name in shown(api, n) for n in api.gallery), name


def test_cli_similar_and_search_take_the_same_constraints(api: Api) -> None:
    env = {"DATABASE_URL": api.settings.resolved_database_url, "DATA_DIR": str(api.settings.data_dir)}
    query = a_photo_with(api, "person")
    result = CliRunner().invoke(cli, ["similar", query, "--with", "dog", "--without", "car", "--json"], env=env)
    assert result.exit_code == 0, result.output
    http = api.client.get(f"/get_similar/{query}?with=dog&without=car").get_json()
    assert json.loads(result.output) == http
    bad = CliRunner().invoke(cli, ["similar", query, "--with", "dgo"], env=env)
    assert bad.exit_code != 0 and "Did you mean dog" in bad.output
    found = CliRunner().invoke(cli, ["search", "dog"], env=env)
    assert found.exit_code == 0 and "matches" in found.output


# ----------------------------------------------------------------------------- near-duplicates


def test_collapse_folds_near_identical_copies_without_changing_pages(api: Api) -> None:
    original = a_photo_with(api, "person")
    copies = near_copies(api.service.queries.original(original).path)
    stored = []
    for kind, data in copies.items():
        response = upload(api.client, data, f"copy-{kind}.jpg")
        assert response.status_code == 201
        stored.append(response.get_json()["name"])
    try:
        query = next(n for n in api.gallery if n not in (original,) and "person" in shown(api, n))
        plain = api.client.get(f"/get_similar/{query}?per_page=100").get_json()
        folded = api.client.get(f"/get_similar/{query}?per_page=100&collapse=1").get_json()
        assert folded["total"] == plain["total"]
        flat = [n for r in folded["results"] for n in [r["name"], *(d["name"] for d in r["near_duplicates"])]]
        assert sorted(flat) == sorted(r["name"] for r in plain["results"])  # nothing lost, nothing repeated
        group = next(r for r in folded["results"] if r["name"] in [original, *stored])
        assert {group["name"], *(d["name"] for d in group["near_duplicates"])} == {original, *stored}
        leaders = [r["name"] for r in folded["results"]]
        assert leaders == [r["name"] for r in plain["results"] if r["name"] in leaders], "leaders keep their rank"
    finally:
        for name in stored:
            api.service.admin.delete(name)


def test_the_hash_threshold_groups_generated_copies_and_keeps_photos_apart(coco_dev_images: list[Path]) -> None:
    photos = coco_dev_images[:60]
    hashes = {}
    for path in photos:
        with Image.open(path) as image:
            hashes[path.name] = perceptual_hash(np.asarray(image.convert("RGB")))
    caught = total = 0
    for path in photos[:20]:
        for data in near_copies(path).values():
            with Image.open(io.BytesIO(data)) as copy:
                total += 1
                caught += hamming(perceptual_hash(np.asarray(copy.convert("RGB"))), hashes[path.name]) <= NEAR_DUPLICATE_BITS
    values = list(hashes.values())
    false_pairs = sum(hamming(a, b) <= NEAR_DUPLICATE_BITS for i, a in enumerate(values) for b in values[i + 1 :])
    assert caught / total >= 0.9, f"recall {caught}/{total}"
    assert false_pairs == 0, "distinct coco_dev photos grouped as near-identical"


# ----------------------------------------------------------------------------- the pieces, without a database


def test_names_are_forgiven_and_multi_word_names_found() -> None:
    from recommender.objects import parse_search

    assert parse_search("Dogs, FRISBEE -people") == ((17, 30), (1,))
    assert parse_search("hot dogs teddy_bears -cell phone") == ((53, 78), (68,))
    assert parse_search("knives buses") == ((6, 44), ())


def test_class_table_search_and_changes_match_a_brute_force() -> None:
    from recommender.classtable import ClassTable

    rng = np.random.default_rng(3)
    rows = {(int(i), int(c)): float(s) for i, c, s in zip(rng.integers(1, 300, 2000), rng.integers(1, 6, 2000),
                                                         np.round(rng.random(2000), 1))}
    table = ClassTable.build(*map(np.array, zip(*[(i, c, s) for (i, c), s in rows.items()])))
    touched = rng.choice(np.arange(1, 300), 40, replace=False)
    fresh = {(int(i), int(c)): 0.5 for i in touched[:20] for c in (1, 2)}
    rows = {k: v for k, v in rows.items() if k[0] not in set(touched.tolist())} | fresh
    table = table.with_changes(touched, *map(np.array, zip(*[(i, c, s) for (i, c), s in fresh.items()])))
    assert table.counts()[1:6].tolist() == [sum(c == k for _, c in rows) for k in range(1, 6)]
    identity = lambda s: s.astype(np.float64)  # noqa: E731
    for required, excluded in [((1,), ()), ((1, 2), (3,)), ((), (4, 5))]:
        images = {i for i, _ in rows} | set(range(1, 300))
        ok = [i for i in images if all((i, c) in rows for c in required) and not any((i, c) in rows for c in excluded)]
        score = {i: float(np.prod([np.float32(rows[i, c]) for c in required])) for i in ok}
        brute = sorted(ok, key=lambda i: (-score[i], i))
        paged = []
        for page in range(1, 40):
            hits = table.search(required, excluded, page, 13, identity, lambda: np.arange(1, 300))
            assert hits.total == len(brute)
            paged += hits.ids.tolist()
        assert paged == brute


def test_reindex_hashes_backfills_photos_stored_without_one(database_url: str, tmp_path: Path, yolo: Detector,  # noqa: F811
                                                             coco_dev_images: list[Path]) -> None:
    from sqlalchemy import text

    from recommender.storage import create_database_engine

    api = make_api(database_url, tmp_path / "data", yolo, coco_dev_images[:3])
    api.service.close()
    engine = create_database_engine(database_url)
    try:
        with engine.begin() as conn:
            stored = dict(conn.execute(text("SELECT name, phash FROM images")).all())
            conn.execute(text("UPDATE images SET phash = NULL"))  # as migration 0003 leaves older photos
        env = {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path / "data")}
        result = CliRunner().invoke(cli, ["reindex", "--hashes", "--quiet"], env=env)
        assert result.exit_code == 0, result.output
        assert "Computed 3 perceptual hash(es); 0 failed." in result.output
        with engine.connect() as conn:
            assert dict(conn.execute(text("SELECT name, phash FROM images")).all()) == stored
        for path in coco_dev_images[:3]:
            with Image.open(path) as image:
                assert stored[path.name] == perceptual_hash(np.asarray(image.convert("RGB")))
        again = CliRunner().invoke(cli, ["reindex", "--hashes", "--quiet"], env=env)
        assert "Computed 0 perceptual hash(es)" in again.output
    finally:
        engine.dispose()
