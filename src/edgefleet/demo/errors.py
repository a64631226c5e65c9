"""Errors of the demo: a part it starts did not come up, or the scenario did not end as it should.

Tree::

    EdgefleetError
     └── DemoError          a step failed; the message names it and where its log is
"""

from edgefleet.errors import EdgefleetError


class DemoError(EdgefleetError):
    """A step of the demo failed (a child did not start, a wait ran out, an outcome was wrong)."""
