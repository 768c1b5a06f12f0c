from collections.abc import Iterator

import pytest

from tests.helpers import Server, running_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `python -m service` (BentoML, 2 workers) for the e2e tests."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(log, "--model-repo", "exports", "--workers", "2") as srv:
        yield srv
