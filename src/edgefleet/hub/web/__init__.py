"""The hub's web dashboard: server-rendered pages (Jinja2, htmx, server-sent events) over the hub's services.

`create_web_app` builds it; the API's app factory mounts it at ``/ui``. Every page calls the
same service functions as the API, with the session's operator, so roles are enforced in one
place. Nothing here builds a query.
"""

from edgefleet.hub.web.app import PREFIX, create_web_app

__all__ = ["PREFIX", "create_web_app"]
