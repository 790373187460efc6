"""One `alignkit run --preset smoke` for the whole session: the CLI tests and the report's browser test
read the same run (it takes most of the e2e time, so it runs once)."""

import pytest

from alignkit.cli import main


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["run", "--preset", "smoke", f"runs_dir={runs}", "name=smoke"]) == 0
    return runs / "smoke"
