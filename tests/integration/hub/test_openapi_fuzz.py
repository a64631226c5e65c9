"""schemathesis over the whole OpenAPI document: no 5xx, and every answer conforms to the schema.

Runs on each database backend, as an admin (the widest reach), with positive (schema-valid)
and negative (schema-violating) cases, a bounded number per operation. The operations are
driven through schemathesis' Python API, not its pytest plugin, so the hub fixture (one per
backend) is the system under test.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from edgefleet.hub.api.app import create_app

pytestmark = pytest.mark.integration

MAX_EXAMPLES = int(os.environ.get("EDGEFLEET_FUZZ_EXAMPLES", "25"))
# CI replays the same cases every run (a red CI must mean a change broke something);
# EDGEFLEET_FUZZ_RANDOM=1 explores new ones, e.g. with a larger EDGEFLEET_FUZZ_EXAMPLES.
DERANDOMIZE = os.environ.get("EDGEFLEET_FUZZ_RANDOM") != "1"
# Schema-valid is not always acceptable: a well-formed string that is not a CSR, an id that
# exists nowhere. Those get a documented 4xx, which every other check still validates.
EXCLUDED = [positive_data_acceptance]
# Schema-violating input must be refused with one of the 4xx the API documents (413 included).
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 409, 413, 422]}}}
)


def exercise(operation, mode, headers):
    """Send generated cases of one operation, checking each answer; returns their status codes.

    `headers()` authenticates each case that did not break the headers on purpose.
    """
    statuses = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        # When schemathesis broke the headers on purpose (the bearer scheme), send them as
        # generated; otherwise authenticate so the request reaches the handler.
        header_info = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
        broken_headers = header_info is not None and header_info.mode is GenerationMode.NEGATIVE
        response = case.call_and_validate(headers=None if broken_headers else headers(), excluded_checks=EXCLUDED)
        statuses.append(response.status_code)

    run()
    return statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_api_conforms_and_never_fails_on_any_input(hub, admin_token, mode):
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(hub), config=CONFIG)
    headers = {"Authorization": f"Bearer {admin_token}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        try:
            exercise(operation, mode, lambda: headers)
        except Unsatisfiable:
            # An operation with no inputs (e.g. /healthz) has no schema-violating request to make.
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:  # noqa: BLE001  # collect every operation's failure, then report them together
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
