"""Multipart parsing that keeps a part whose headers are not UTF-8 (a legacy client's file name).

Werkzeug decodes the header block of each part as strict UTF-8. One file name in Latin-1 or
Shift-JIS raises inside its parser, and the form parser drops the *whole form* on any such
error: the photo arrives as "no file sent" (400 missing_file), which is untrue. RFC 7578 asks
for UTF-8 names, but browsers on old pages and command-line tools still send the bytes of the
system's encoding. Here a header block that is not UTF-8 is read as Latin-1 instead: every
byte becomes a character, nothing is refused, and the name is made safe where every client
name is (``storage.names``).

Werkzeug's multipart parser builds its decoder internally, so the form parser below drives
Werkzeug's own sans-IO decoder (a subclass of it), the way its parser does.
"""

from __future__ import annotations

import typing as t

from flask import Request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

_CHUNK = 64 * 1024


def as_utf8(header_block: bytes | bytearray) -> bytes:
    """The header block unchanged when it is UTF-8, else its bytes read as Latin-1, in UTF-8."""
    raw = bytes(header_block)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1").encode("utf-8")
    return raw


class LenientMultipartDecoder(MultipartDecoder):
    def _parse_headers(self, data: bytes | bytearray) -> t.Any:
        return super()._parse_headers(as_utf8(data))


class LenientFormDataParser(FormDataParser):
    def _parse_multipart(self, stream: t.IO[bytes], mimetype: str, content_length: int | None,
                         options: dict[str, str]) -> t.Any:
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        decoder = LenientMultipartDecoder(boundary, self.max_form_memory_size, max_parts=self.max_form_parts)
        fields: list[tuple[str, str]] = []
        files: list[tuple[str, FileStorage]] = []
        part: Field | File | None = None
        container: t.Any = None
        size = 0
        while True:
            chunk = stream.read(_CHUNK)
            decoder.receive_data(chunk or None)  # None: the body ended
            event = decoder.next_event()
            while not isinstance(event, (Epilogue, NeedData)):
                if isinstance(event, Field):
                    part, container, size = event, [], 0
                elif isinstance(event, File):
                    part, container = event, self.stream_factory(
                        total_content_length=content_length, filename=event.filename,
                        content_type=event.headers.get("content-type"), content_length=0,
                    )
                elif isinstance(event, Data):
                    if isinstance(part, Field):
                        size += len(event.data)
                        if self.max_form_memory_size is not None and size > self.max_form_memory_size:
                            raise RequestEntityTooLarge()
                        container.append(event.data)
                    else:
                        container.write(event.data)
                    if not event.more_data:
                        _finish(part, container, fields, files)
                event = decoder.next_event()
            if not chunk:
                return stream, self.cls(fields), self.cls(files)


def _finish(part: t.Any, container: t.Any, fields: list, files: list) -> None:
    if isinstance(part, Field):
        fields.append((part.name, b"".join(container).decode("utf-8", "replace")))
    else:
        container.seek(0)
        files.append((part.name, FileStorage(container, part.filename, part.name, headers=part.headers)))


class UploadRequest(Request):
    """Flask's request, with the lenient multipart parser."""

    form_data_parser_class = LenientFormDataParser
