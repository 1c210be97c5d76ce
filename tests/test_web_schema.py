"""Property tests of the REST API against its own OpenAPI document (schemathesis): whatever a
client sends, valid or not, the API answers as documented and never with a server error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from labctl.config import Config, DatabaseConfig
from labctl.db import connect
from labctl.users import create_token
from tests.webfixtures import seed, served, web_config

EXAMPLES = 15  # per operation and mode: about 400 requests, well under a minute
# A schema-valid request may still be refused: the `where` language, field names, dataset ids and
# job types are checked by labctl (422), not by JSON Schema. Every other check stays on.
CHECKS_OFF = [positive_data_acceptance]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The API served over an embedded store holding a dataset, with bob's token."""
    tmp_path: Path = tmp_path_factory.mktemp("fuzz")
    base = Config(user="tester", database=DatabaseConfig(uri="embedded", path=tmp_path / "store"))
    cfg = web_config(base, tmp_path)
    with connect(cfg.database) as db, served(cfg) as url:
        seed(db, cfg, tmp_path)
        yield url, {"Authorization": f"Bearer {create_token(db, 'bob')}"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(
    api: tuple[str, dict[str, str]], mode: GenerationMode
) -> None:
    url, headers = api
    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json", headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 28

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: Any) -> None:
            case.call_and_validate(base_url=url, headers=headers, excluded_checks=CHECKS_OFF)

        try:
            conforms()
        except Unsatisfiable:  # e.g. GET /me: no parameter, so no request can be invalid
            assert mode is GenerationMode.NEGATIVE, operation.label
