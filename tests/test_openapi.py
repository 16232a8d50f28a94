"""The OpenAPI description matches the running app: same routes, same status codes, same shapes.

Each documented (path, method, status) has a request below that must produce exactly that
status from the real app (real detector, real SQLite database), and every JSON answer is
checked against the documented schema. A route added without documentation, a documented
status nobody can observe, or a field renamed in one place only fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from recommender.config import Settings
from recommender.detection import Detector
from recommender.web import create_app
from recommender.web.api import OPENAPI_PATH
from test_api import ADMIN_TOKEN, Api, make_api, png_bomb, upload, yolo  # noqa: F401  (yolo: fixture)

METHODS = ("get", "post", "put", "delete", "patch")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return json.loads(OPENAPI_PATH.read_text())


def openapi_path(rule: str) -> str:
    """Flask's ``/images/<name>`` or ``/static/<path:filename>`` as OpenAPI's ``/images/{name}``."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def violations(spec: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """What in ``value`` does not fit ``schema`` (the subset of JSON Schema the document uses)."""
    schema = resolve(spec, schema)
    if value is None and schema.get("nullable"):
        return []
    if "oneOf" in schema:
        fits = [s for s in schema["oneOf"] if not violations(spec, s, value, where)]
        return [] if len(fits) == 1 else [f"{where}: matches {len(fits)} of the oneOf schemas"]
    kind = schema.get("type")
    checks: dict[str, Callable[[Any], bool]] = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if kind and not checks[kind](value):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{where}: {value} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        problems.append(f"{where}: {value} > {schema['maximum']}")
    if kind == "object":
        problems += [f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                problems += violations(spec, sub, value[key], f"{where}.{key}")
        undocumented = set(value) - set(schema.get("properties", {}))
        if schema.get("properties") and undocumented:
            problems.append(f"{where}: undocumented fields {sorted(undocumented)}")
    if kind == "array":
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            problems.append(f"{where}: {len(value)} items")
        for i, item in enumerate(value):
            problems += violations(spec, schema.get("items", {}), item, f"{where}[{i}]")
    return problems


# ----------------------------------------------------------------------------- routes


def test_every_route_is_documented_and_every_documented_route_exists(spec: dict[str, Any], tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), start=False)
    served: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((openapi_path(rule.rule), method.lower()))
    documented = {(path, method) for path, item in spec["paths"].items() for method in item if method in METHODS}
    assert served - documented == set(), "routes missing from openapi.json"
    assert documented - served == set(), "documented operations the app does not serve"


def test_the_document_is_well_formed(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.0") and spec["info"]["title"] and spec["info"]["version"]
    refs = re.findall(r'"\$ref": "([^"]+)"', OPENAPI_PATH.read_text())
    assert refs
    for ref in refs:
        resolve(spec, {"$ref": ref})  # raises KeyError for a dangling reference
    for path, item in spec["paths"].items():
        declared = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            params = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert params == declared, f"{method.upper()} {path}: path parameters {params} != {declared}"
            assert operation["responses"], f"{method.upper()} {path} documents no response"
            for status, response in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status) and response["description"]


# ----------------------------------------------------------------------------- status codes


@dataclass
class Apps:
    ready: Api  # a small collection, service loaded
    loading: FlaskClient  # same settings, service not started yet
    empty: Api  # a collection without photos
    new_photo: Path


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory, yolo: Detector, coco_dev_images: list[Path]):  # noqa: F811
    root = tmp_path_factory.mktemp("openapi")
    ready = make_api(f"sqlite:///{root / 'ready.sqlite3'}", root / "ready", yolo, coco_dev_images[:3])
    empty = make_api(f"sqlite:///{root / 'empty.sqlite3'}", root / "empty", yolo, [])
    loading_app: Flask = create_app(ready.settings, ready.service, start=False)
    yield Apps(ready, loading_app.test_client(), empty, coco_dev_images[20])
    ready.service.close()
    empty.service.close()


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def recipes(apps: Apps) -> list[tuple[str, str, str, Callable[[], Any]]]:
    """(path, method, status, request) in an order where each request finds what it needs."""
    c, loading, empty = apps.ready.client, apps.loading, apps.empty.client
    name = apps.ready.gallery[0]
    new = apps.new_photo
    tag = lambda url: c.get(url).headers["ETag"]  # noqa: E731
    return [
        ("/upload_file", "post", "201", lambda: upload(c, new.read_bytes(), new.name)),
        ("/upload_file", "post", "200", lambda: upload(c, new.read_bytes(), "again.jpg")),
        ("/upload_file", "post", "400", lambda: c.post("/upload_file", data={}, content_type="multipart/form-data")),
        ("/upload_file", "post", "413", lambda: upload(c, b"\xff\xd8\xff" + bytes(3 * 1024 * 1024))),
        ("/upload_file", "post", "415", lambda: upload(c, b"just some text")),
        ("/upload_file", "post", "422", lambda: upload(c, png_bomb(), "bomb.png")),
        ("/upload_file", "post", "503", lambda: upload(loading, new.read_bytes(), new.name)),
        ("/get_similar/{name}", "get", "200",
         lambda: c.get(f"/get_similar/{name}?page=1&per_page=2&min_similarity=0&add=dog&collapse=1")),
        ("/get_similar/{name}", "get", "400", lambda: c.get(f"/get_similar/{name}?per_page=1000")),
        ("/get_similar/{name}", "get", "404", lambda: c.get("/get_similar/missing.jpg")),
        ("/get_similar/{name}", "get", "422", lambda: c.get(f"/get_similar/{name}?with=dog&without=dogs")),
        ("/get_similar/{name}", "get", "503", lambda: loading.get(f"/get_similar/{name}")),
        ("/search", "get", "200", lambda: c.get("/search?q=person -dog&collapse=1")),
        ("/search", "get", "400", lambda: c.get("/search?q=person&page=x")),
        ("/search", "get", "422", lambda: c.get("/search?q=unicorn")),
        ("/search", "get", "503", lambda: loading.get("/search?q=person")),
        ("/classes", "get", "200", lambda: c.get("/classes")),
        ("/classes", "get", "503", lambda: loading.get("/classes")),
        ("/random", "get", "200", lambda: c.get("/random")),
        ("/random", "get", "400", lambda: c.get("/random?n=-3")),
        ("/random", "get", "404", lambda: empty.get("/random?n=10")),
        ("/random", "get", "503", lambda: loading.get("/random")),
        ("/images/{name}", "get", "200", lambda: c.get(f"/images/{name}")),
        ("/images/{name}", "get", "304",
         lambda: c.get(f"/images/{name}", headers={"If-None-Match": tag(f"/images/{name}")})),
        ("/images/{name}", "get", "404", lambda: c.get("/images/missing.jpg")),
        ("/images/{name}", "get", "503", lambda: loading.get(f"/images/{name}")),
        ("/images/{name}/thumb", "get", "200", lambda: c.get(f"/images/{name}/thumb")),
        ("/images/{name}/thumb", "get", "304",
         lambda: c.get(f"/images/{name}/thumb", headers={"If-None-Match": tag(f"/images/{name}/thumb")})),
        ("/images/{name}/thumb", "get", "404", lambda: c.get("/images/missing.jpg/thumb")),
        ("/images/{name}/thumb", "get", "503", lambda: loading.get(f"/images/{name}/thumb")),
        ("/images/{name}/detections", "get", "200", lambda: c.get(f"/images/{name}/detections")),
        ("/images/{name}/detections", "get", "404", lambda: c.get("/images/missing.jpg/detections")),
        ("/images/{name}/detections", "get", "503", lambda: loading.get(f"/images/{name}/detections")),
        ("/images/{name}", "delete", "401", lambda: c.delete(f"/images/{new.name}")),
        ("/images/{name}", "delete", "403",
         lambda: c.delete(f"/images/{new.name}", headers={"Authorization": "Bearer x"})),
        ("/images/{name}", "delete", "404", lambda: c.delete("/images/missing.jpg", headers=_admin())),
        ("/images/{name}", "delete", "503", lambda: loading.delete(f"/images/{new.name}", headers=_admin())),
        ("/images/{name}", "delete", "200", lambda: c.delete(f"/images/{new.name}", headers=_admin())),
        ("/healthz", "get", "200", lambda: c.get("/healthz")),
        ("/healthz", "get", "503", lambda: loading.get("/healthz")),
        ("/openapi.json", "get", "200", lambda: c.get("/openapi.json")),
        ("/", "get", "200", lambda: c.get("/")),
        ("/static/{filename}", "get", "200", lambda: c.get("/static/app.js")),
        ("/static/{filename}", "get", "404", lambda: c.get("/static/nothing.css")),
    ]


def test_every_documented_status_is_what_the_app_answers(spec: dict[str, Any], apps: Apps) -> None:
    cases = recipes(apps)
    documented = {
        (path, method, status)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        for status in operation["responses"]
    }
    assert {(p, m, s) for p, m, s, _ in cases} == documented, "a documented status has no request here, or vice versa"

    problems: list[str] = []
    for path, method, status, send in cases:
        response = send()
        label = f"{method.upper()} {path} → {status}"
        if str(response.status_code) != status:
            problems.append(f"{label}: got {response.status_code} {response.get_data(as_text=True)[:200]}")
            continue
        documented_response = spec["paths"][path][method]["responses"][status]
        content = documented_response.get("content", {})
        if "application/json" in content:
            assert response.mimetype == "application/json", label
            schema = content["application/json"]["schema"]
            problems += [f"{label}: {v}" for v in violations(spec, schema, response.get_json())]
        elif content:
            declared = list(content)[0]
            if declared not in ("*/*", "image/*"):
                problems += [] if response.mimetype == declared else [f"{label}: content type {response.mimetype}"]
            elif declared == "image/*" and not response.mimetype.startswith("image/"):
                problems.append(f"{label}: content type {response.mimetype}")
        for header in documented_response.get("headers", {}):
            if header not in response.headers:
                problems.append(f"{label}: no {header} header")
    assert problems == []


def test_errors_on_undocumented_methods_are_json_too(apps: Apps) -> None:
    # 405 is documented once, globally, in info.description rather than per operation.
    response = apps.ready.client.patch("/healthz")
    assert response.status_code == 405 and set(response.get_json()["error"]) == {"code", "message"}

