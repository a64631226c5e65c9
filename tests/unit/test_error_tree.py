"""Every error edgefleet raises on purpose derives from `EdgefleetError`, one tree per package (issue 17 point 6)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import edgefleet
from edgefleet.errors import EdgefleetError

OUTSIDE = {
    "edgefleet.agent.fetcher.RangeIgnoredError": "python-tuf's DownloadError: the fetcher's contract with python-tuf",
    "edgefleet.hub.services.devices._StaleRecordError": "private: raised and caught inside one function",
}
"""Error classes that belong to another library's tree, and why."""


def error_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(edgefleet.__path__, "edgefleet."):
        if ".migrations" in module_info.name or module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_error_of_ours_is_an_edgefleet_error() -> None:
    strays = {name for name, kind in error_classes().items() if not issubclass(kind, EdgefleetError)}
    assert strays == set(OUTSIDE)


def test_the_agents_errors_are_one_tree_in_one_module() -> None:
    from edgefleet.agent.errors import AgentError

    agent = {name: kind for name, kind in error_classes().items() if name.startswith("edgefleet.agent.")}
    assert {name for name, kind in agent.items() if issubclass(kind, AgentError)} == {
        name for name in agent if name.startswith("edgefleet.agent.errors.")
    }
