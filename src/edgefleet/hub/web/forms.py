"""Reading an urlencoded form body within bounds (size, fields, UTF-8) without a multipart parser."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from edgefleet.hub.web.errors import FormError

MAX_FIELDS = 16
FORM_TYPE = "application/x-www-form-urlencoded"


def parse_form(body: bytes) -> dict[str, str]:
    """The fields of an urlencoded body (pure); each name at most once.

    Raises:
        FormError: not UTF-8, too many fields, a repeated field, or a NUL character.
    """
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(400, "the form could not be read (too many fields, or not UTF-8)") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise FormError(400, f"the form names {name[:40]!r} twice")
        if "\x00" in name or "\x00" in value:
            raise FormError(400, "the form contains a NUL character")
        fields[name] = value
    return fields


async def read_form(request: Request, *, max_bytes: int) -> dict[str, str]:
    """Read the request's urlencoded body, at most `max_bytes`, and parse it.

    Raises:
        FormError: another content type (415), a larger body (413), or an unreadable one (400).
    """
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_TYPE:
        raise FormError(415, f"send the form as {FORM_TYPE}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise FormError(413, f"the form is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise FormError(413, f"the form is larger than {max_bytes} bytes")
    return parse_form(bytes(body))
