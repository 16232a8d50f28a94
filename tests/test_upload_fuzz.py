"""Property: whatever bytes and headers reach POST /upload_file, the answer is never a server error.

Hypothesis generates 500 requests per run from real photos: cut, bit-flipped, spliced and
re-headed photos, random bytes, in well-formed and odd multipart bodies (other boundaries,
missing or repeated parts, file names with control or non-UTF-8 bytes, no closing boundary,
other content types) with random extra headers. The invariant, through the real app and
detector: the status is below 500, or 503 ``busy`` (and 507 only if the disk is really full,
which it is not here), and every answer is JSON: an upload's result or ``{"error": {"code",
"message"}}``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_api
from recommender.detection import Detector
from test_api import Api, make_api

yolo = test_api.yolo  # the real detector, loaded once (a fixture of test_api.py)

EXAMPLES = 500
SEEDS = 6  # real photos the bodies are made from


@pytest.fixture(scope="module")
def photos(coco_dev_images: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in coco_dev_images[100 : 100 + SEEDS]]


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory, yolo: Detector, coco_dev_images: list[Path]):
    root = tmp_path_factory.mktemp("fuzz")
    built = make_api(f"sqlite:///{root / 'fuzz.sqlite3'}", root / "data", yolo, coco_dev_images[:2])
    yield built
    built.service.close()


@st.composite
def payloads(draw: st.DrawFn, photos: list[bytes]) -> bytes:
    photo = draw(st.sampled_from(photos))
    how = draw(st.sampled_from(["intact", "cut", "flipped", "spliced", "reheaded", "random", "empty"]))
    if how == "cut":
        return photo[: draw(st.integers(0, len(photo)))]
    if how == "flipped":
        data = bytearray(photo)
        for _ in range(draw(st.integers(1, 20))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    if how == "spliced":
        other = draw(st.sampled_from(photos))
        return photo[: draw(st.integers(0, len(photo)))] + other[draw(st.integers(0, len(other))):]
    if how == "reheaded":  # the start of another format, the rest a JPEG
        head = draw(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP", b"%PDF"]))
        return head + photo[draw(st.integers(0, 64)):]
    if how == "random":
        return draw(st.binary(max_size=4096))
    return b"" if how == "empty" else photo


TOKEN = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=12)
NAME_BYTES = st.one_of(
    st.sampled_from([b"photo.jpg", b"", b"..\\..\\etc\\passwd", b"caf\xe9.jpg", b"\x8e\xca\x90^.jpg", b"a\x00b.jpg",
                     b"\xff\xfe", b"x" * 400 + b".png", b'q"uote.jpg']),
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b and b'"' not in b),
)


@st.composite
def requests(draw: st.DrawFn, photos: list[bytes]) -> tuple[bytes, dict[str, str]]:
    payload = draw(payloads(photos))
    boundary = draw(TOKEN)
    # Mostly a well-formed form, so most bodies reach the image decoder; the odd shapes besides.
    odd = ["two parts", "no filename", "unterminated", "wrong boundary", "preamble", "raw", "urlencoded"]
    shape = draw(st.sampled_from(odd)) if draw(st.integers(0, 3)) == 0 else "multipart"
    headers = draw(st.dictionaries(st.sampled_from(["X-Forwarded-For", "Accept", "X-Request-Id", "Expect", "Accept-Encoding"]),
                                   TOKEN, max_size=2))
    right_field = draw(st.sampled_from([True] * 9 + [False])) or shape == "two parts"
    field = b"file_to_upload" if right_field else draw(TOKEN).encode()

    def part(name: bytes, filename: bytes | None, data: bytes) -> bytes:
        disposition = b'form-data; name="' + name + b'"' + (b'; filename="' + filename + b'"' if filename is not None else b"")
        return b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + data + b"\r\n"

    end = b"--" + boundary.encode() + b"--\r\n"
    filename = draw(NAME_BYTES)
    if shape == "raw":
        return payload, {**headers, "Content-Type": draw(st.sampled_from(["image/jpeg", "application/octet-stream", "text/plain"]))}
    if shape == "urlencoded":
        return b"file_to_upload=" + payload[:200], {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    body = {
        "multipart": part(field, filename, payload) + end,
        "two parts": part(field, filename, payload) + part(b"other", b"b.jpg", payload[:100]) + end,
        "no filename": part(field, None, payload) + end,
        "unterminated": part(field, filename, payload),
        "wrong boundary": part(field, filename, payload).replace(boundary.encode(), b"other" + boundary.encode()) + end,
        "preamble": b"garbage before\r\n" + part(field, filename, payload) + end + b"garbage after",
    }[shape]
    content_type = f"multipart/form-data; boundary={boundary}"
    if draw(st.integers(0, 5)) == 0:
        content_type = draw(st.sampled_from(["multipart/form-data", f'multipart/form-data; boundary="{boundary}"',
                                             f"multipart/mixed; boundary={boundary}"]))
    return body, {**headers, "Content-Type": content_type}


def test_no_upload_request_gets_a_server_error(fuzz_api: Api, photos: list[bytes]) -> None:
    seen: dict[object, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests(photos))
    def check(request: tuple[bytes, dict[str, str]]) -> None:
        body, headers = request
        response = fuzz_api.client.post("/upload_file", data=body, headers=headers)
        key = response.status_code if response.status_code < 300 else f"{response.status_code} {(response.get_json(silent=True) or {}).get('error', {}).get('code')}"
        seen[key] = seen.get(key, 0) + 1
        answer = response.get_json(silent=True)
        assert response.mimetype == "application/json" and isinstance(answer, dict), response.get_data()[:200]
        if response.status_code in (200, 201):
            assert answer["name"] and answer["url"], answer
            return
        assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}, answer
        assert answer["error"]["message"] and "Traceback" not in answer["error"]["message"]
        assert response.status_code < 500 or (response.status_code == 503 and answer["error"]["code"] == "busy"), answer

    check()
    print(f"\nstatuses of {sum(seen.values())} generated uploads: {dict(sorted(seen.items(), key=str))}")
    assert sum(seen.values()) >= EXAMPLES
