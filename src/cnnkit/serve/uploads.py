"""Images out of a request: a raw body (``Content-Type: image/...``) or the files of a multipart form.

Multipart forms are parsed here with python-multipart, in memory (the body is already
capped by :class:`~cnnkit.serve.limits.BodyLimitMiddleware`), so that a flood of parts is
stopped at the first part over the cap with a 413, and nothing is spooled to disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from cnnkit.serve.limits import ApiError

__all__ = ["EXTRA_FORM_FIELDS", "Upload", "read_uploads"]

EXTRA_FORM_FIELDS = 8  # non-file form fields tolerated beside the images (and ignored)
_FIELD_BYTES = 1024  # longest non-file field kept; the rest is dropped unread

RAW_TYPES = (b"application/octet-stream",)
HOW_TO_SEND = (
    "send the image as the body with Content-Type image/png (or image/jpeg, ...), "
    "or as files of a multipart/form-data form"
)


@dataclass(frozen=True)
class Upload:
    """One uploaded image: the name it came with and its encoded bytes."""

    name: str
    data: bytes


async def read_uploads(request: Request, max_images: int) -> list[Upload]:
    """The images in ``request``; :class:`ApiError` for an empty body, a wrong type, or too many images."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type == b"multipart/form-data":
        uploads = await _read_multipart(request, params.get(b"boundary"), max_images)
        if not uploads:
            raise ApiError(422, "no_image", f"the form holds no file; {HOW_TO_SEND}")
        return uploads
    if content_type and not (content_type.startswith(b"image/") or content_type in RAW_TYPES):
        shown = content_type.decode("latin-1")
        raise ApiError(415, "unsupported_media_type", f"cannot read a body of type {shown} as an image; {HOW_TO_SEND}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    if not body:
        raise ApiError(422, "no_image", f"the request body is empty; {HOW_TO_SEND}")
    return [Upload("image", bytes(body))]


class _FormCollector:
    """python-multipart callbacks that keep file parts and count every part against the caps."""

    def __init__(self, max_images: int) -> None:
        self.max_images = max_images
        self.uploads: list[Upload] = []
        self.parts = 0
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._data = bytearray()
        self._filename: str | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_images + EXTRA_FORM_FIELDS:
            raise ApiError(413, "too_many_parts", f"the form has more parts than {self.max_images} images allow")
        self._headers, self._data, self._filename = {}, bytearray(), None

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"filename" in options or b"filename*" in options:
            raw = options.get(b"filename", options.get(b"filename*", b""))
            self._filename = raw.decode("utf-8", "replace") or f"image{len(self.uploads) + 1}"
            if len(self.uploads) >= self.max_images:
                raise ApiError(413, "too_many_images", f"at most {self.max_images} images per request")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._filename is not None:
            self._data.extend(data[start:end])
        elif len(self._data) < _FIELD_BYTES:  # a plain form field: ignored, so keep little of it
            self._data.extend(data[start : min(end, start + _FIELD_BYTES)])

    def on_part_end(self) -> None:
        if self._filename is None:
            return
        if not self._data:
            raise ApiError(422, "no_image", f"{self._filename}: the file is empty")
        self.uploads.append(Upload(self._filename, bytes(self._data)))


async def _read_multipart(request: Request, boundary: bytes | None, max_images: int) -> list[Upload]:
    if not boundary:
        raise ApiError(400, "bad_multipart", "the multipart/form-data Content-Type has no boundary")
    collector = _FormCollector(max_images)
    parser = MultipartParser(boundary, collector.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as e:
        raise ApiError(400, "bad_multipart", f"the multipart form is malformed ({e})") from None
    return collector.uploads
