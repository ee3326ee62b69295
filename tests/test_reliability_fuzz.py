"""Schemathesis against the service's own OpenAPI document (/openapi.json of the running contract application):
a bounded number of generated requests per operation, valid and invalid. No 5xx, and every response conforms to
the document (status codes, content types, bodies, headers)."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from reliability import report

pytestmark = pytest.mark.e2e

EXAMPLES_PER_OPERATION = 40
SEEN: Counter = Counter()


@pytest.fixture(scope="module")
def api_schema(app_url):
    return schemathesis.openapi.from_url(app_url + "/openapi.json")


def test_fuzz_no_5xx_and_responses_conform(api_schema):
    """Every operation the document lists (so routes added later are fuzzed too), in both generation modes.
    (Schemathesis's own pytest plugin path, ``from_fixture``, does not run on pytest 9; its strategies do.)"""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {"/v1/cutout", "/v1/images", "/background-removal/remove"} <= {op.path for op in operations}
    for operation in operations:
        for mode in GenerationMode:
            strategy = operation.as_strategy(mode)

            @given(case=strategy)
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call(timeout=120)
                SEEN[(f"{case.method} {case.path}", mode.value, response.status_code)] += 1
                # Every other check runs. This one is left out: a schema-valid request is not always one to
                # accept (random bytes in `image` fit the schema's "binary" and are rightly refused with 415).
                case.validate_response(response, excluded_checks=[positive_data_acceptance])

            try:
                check()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.path  # nothing to negate: GET /healthz


def test_report_fuzz(api_schema):
    """After the fuzz test (file order): what was sent and answered."""
    total = sum(SEEN.values())
    assert total >= EXAMPLES_PER_OPERATION  # the fuzzing ran
    by_status, by_mode = Counter(), Counter()
    for (_, mode, status), n in SEEN.items():
        by_status[status] += n
        by_mode[mode] += n
    operations = sorted({op for op, _, _ in SEEN})
    report("fuzz", f"schemathesis: {total} generated requests over {len(operations)} operations "
                   f"({', '.join(operations)}); by mode {dict(by_mode)}; "
                   f"status codes {dict(sorted(by_status.items()))}; "
                   f"5xx: {sum(n for s, n in by_status.items() if s >= 500)}")
