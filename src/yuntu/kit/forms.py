"""A multipart/form-data body read in one pass, its file streamed on as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from yuntu.kit.errors import AppError, E

_MAX_FIELDS_BYTES = 64 * 1024


def field_error(field: str, message: str) -> AppError:
    return AppError(E.VALIDATION_ERROR, details=[{"field": field, "message": message}])


class StreamedForm:
    """A multipart/form-data body read in one pass: the bytes of the `file` field are handed
    on as they arrive (never spooled to a temporary file), the other fields (small, at most
    64 KiB in all) are collected. Only the first `file` part counts."""

    def __init__(self, content_type: str | None, body: AsyncIterable[bytes]) -> None:
        kind, params = parse_options_header(content_type or "")
        boundary = params.get(b"boundary")
        if kind == b"application/x-www-form-urlencoded":  # a form, but it cannot hold a file
            raise field_error("body.file", "Field required (send multipart/form-data)")
        if kind != b"multipart/form-data" or not boundary:
            raise AppError(E.UNSUPPORTED_MEDIA_TYPE, message="send multipart/form-data")
        self.body = body
        self.fields: dict[str, str] = {}
        self.found = False
        self.filename: str | None = None
        self._out: list[bytes] = []
        self._kind = ""
        self._name = ""
        self._buffer = bytearray()
        self._field_bytes = 0
        self._header = b""
        self._value = b""
        self._disposition = b""
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def _part_begin(self) -> None:
        self._disposition = b""
        self._kind = ""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = _decode(options.get(b"name", b""))
        if name == "file" and b"filename" in options and not self.found:
            self._kind, self.found = "file", True
            self.filename = _decode(options[b"filename"])
        elif b"filename" in options or not name:
            self._kind = "skip"
        else:
            self._kind, self._name = "field", name
            self._buffer = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "file":
            self._out.append(bytes(data[start:end]))
        elif self._kind == "field":
            self._field_bytes += end - start
            if self._field_bytes > _MAX_FIELDS_BYTES:
                raise AppError(E.PAYLOAD_TOO_LARGE, message="form fields are too large")
            self._buffer += data[start:end]

    def _end(self) -> None:
        self._ended = True

    def _part_end(self) -> None:
        if self._kind == "field":
            self.fields.setdefault(self._name, _decode(bytes(self._buffer)))
        self._kind = ""

    async def file_chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.body:
            try:
                self._parser.write(chunk)
            except FormParserError as exc:
                raise AppError(E.BAD_REQUEST, message="malformed multipart body") from exc
            if self._out:
                yield b"".join(self._out)
                self._out.clear()
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise AppError(E.BAD_REQUEST, message="malformed multipart body") from exc
        if not self._ended:  # a truncated body must not be stored as a shorter file
            raise AppError(E.BAD_REQUEST, message="the multipart body ended early")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")
