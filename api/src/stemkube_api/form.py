"""A multipart/form-data request body read as it arrives: fields as they end, the file's bytes
chunk by chunk, nothing spooled. (Starlette's form parser writes files to a temporary file
before the endpoint runs; an upload here goes straight on to object storage.)"""

import email.message
import email.utils
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 16 * 1024
MAX_PARTS = 32


class FormError(ValueError):
    """The body is not a form we can read; the message says why."""


@dataclass(frozen=True)
class Field:
    name: str
    value: str


@dataclass(frozen=True)
class FileStart:
    name: str
    filename: str
    content_type: str


@dataclass(frozen=True)
class FileData:
    data: bytes


@dataclass(frozen=True)
class FileEnd:
    pass


Event = Field | FileStart | FileData | FileEnd


def boundary_of(content_type: str | None) -> bytes:
    if not content_type:
        raise FormError("send the song as multipart/form-data with a 'file' field")
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise FormError(
            f"send the song as multipart/form-data with a 'file' field, not {kind.decode()}"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise FormError("the multipart/form-data Content-Type has no boundary")
    return boundary


def extended_filename(disposition: bytes) -> str | None:
    """The RFC 5987 ``filename*`` of a part's Content-Disposition (``UTF-8''Beyonc%C3%A9.mp3``,
    RFC 2231 continuations too), decoded; None where the part has none. RFC 7578 forbids the
    form, but clients send it, some without a plain ``filename``: python-multipart skips it, so
    such a part would read as an over-long field rather than the file it is."""
    message = email.message.Message()
    message["content-disposition"] = disposition.decode("latin-1")
    # email decodes extended parameters to (charset, language, text) and plain ones to str
    # (its stubs say str for both).
    params: list[tuple[str, str | tuple[str, str, str]]] = message.get_params(
        [], header="content-disposition"
    )  # type: ignore[assignment]
    for key, value in params:
        if key.lower() == "filename" and isinstance(value, tuple):
            return email.utils.collapse_rfc2231_value(
                value, errors="replace", fallback_charset="utf-8"
            )
    return None


class _Collector:
    def __init__(self, max_parts: int = MAX_PARTS) -> None:
        self.max_parts = max_parts
        self.events: list[Event] = []
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._field: str | None = None
        self._value = bytearray()
        self._is_file = False
        self._parts = 0

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self.max_parts:
            raise FormError(f"the form has more than {self.max_parts} parts")
        self._headers = {}
        self._field = None
        self._value = bytearray()
        self._is_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        if name is None:
            raise FormError("a form part has no name in its Content-Disposition")
        self._field = name.decode("utf-8", "replace")
        # The exact name, where a client sends both, is filename*'s (RFC 6266 section 4.3):
        # the plain filename is then its ASCII stand-in.
        extended = extended_filename(disposition) if b"filename*" in disposition.lower() else None
        if extended is not None or b"filename" in options:
            self._is_file = True
            filename = (
                extended
                if extended is not None
                else options[b"filename"].decode("utf-8", "replace")
            )
            content_type = self._headers.get(b"content-type", b"").decode("latin-1")
            self.events.append(FileStart(self._field, filename, content_type))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.events.append(FileData(bytes(data[start:end])))
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise FormError(f"form field {self._field!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._is_file:
            self.events.append(FileEnd())
        elif self._field is not None:
            self.events.append(Field(self._field, self._value.decode("utf-8", "replace")))


async def read_form(
    stream: AsyncIterator[bytes], boundary: bytes, max_parts: int = MAX_PARTS
) -> AsyncIterator[Event]:
    """The form's events in order; consecutive file bytes of one body chunk come merged.
    ``max_parts``: more is refused (a batch's form holds a part per song)."""
    collector = _Collector(max_parts)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
        },
    )
    async for chunk in stream:
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise FormError(f"the multipart body is malformed: {exc}") from None
        events, collector.events = collector.events, []
        for event in _merged(events):
            yield event
    try:
        parser.finalize()
    except FormParserError as exc:
        raise FormError(f"the multipart body is malformed: {exc}") from None
    for event in _merged(collector.events):
        yield event


def _merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if isinstance(event, FileData) and out and isinstance(out[-1], FileData):
            out[-1] = FileData(out[-1].data + event.data)
        else:
            out.append(event)
    return out
