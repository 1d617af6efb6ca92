"""Schemathesis against the published spec (openapi/qlaud.json) and the
running binary, on each store, with an admin and a standard key: every
operation gets generated requests, valid and not, and every answer must
conform to the spec (status code, content type, body schema) and never be
a 5xx other than the documented 503s.

The fuzzing runs in a tenant of its own, so whatever it creates, rotates
or revokes cannot disturb the other tests. Examples per operation are
bounded (QLAUD_FUZZ_EXAMPLES, default 10) to keep the test command short.
"""

import json
import os
import pathlib
import subprocess

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import mint

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_path(ROOT / "openapi" / "qlaud.json")
EXAMPLES = int(os.environ.get("QLAUD_FUZZ_EXAMPLES", "10"))

# 503 is documented where a backing service may be missing (a search index,
# an embedding model); any other 5xx is a bug.
DOCUMENTED_5XX = {503}


@pytest.fixture(scope="session")
def fuzz_keys(qlaud):
    """A tenant of its own: its master key and one standard key."""
    out = subprocess.run(
        [os.environ["QLAUD_BIN"], "admin", "create-tenant", "--name", "fuzz",
         *qlaud["store_args"]],
        check=True, capture_output=True, text=True,
        env={k: v for k, v in os.environ.items() if k != "QLAUD_DATABASE_URL"},
    )
    admin = json.loads(out.stdout)["master_key"]
    standard = mint({"base_url": qlaud["base_url"], "master_key": admin},
                    {"name": "fuzz_user", "max_spend_usd": 1})
    return {"admin": admin, "standard": standard}


@pytest.mark.parametrize("scope", ["admin", "standard"])
@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_spec(case, scope, qlaud, fuzz_keys):
    headers = {"Authorization": "Bearer " + fuzz_keys[scope]}
    response = case.call(base_url=qlaud["base_url"], headers=headers, timeout=30)
    assert response.status_code < 500 or response.status_code in DOCUMENTED_5XX, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
    )
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )
