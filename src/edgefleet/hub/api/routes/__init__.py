"""Route modules of the hub API, one per resource; each is thin: parse, call a service, shape."""

from edgefleet.protocol import ErrorBody

ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Malformed or unacceptable input"),
        (401, "Missing or invalid credentials"),
        (403, "Not allowed"),
        (404, "Not found"),
        (409, "Conflicts with the current state"),
        (413, "Request body too large"),
        (422, "Request does not match the schema"),
        (503, "Database unavailable"),
    )
}
