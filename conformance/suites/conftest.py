"""The suites need the batchspec plugin, which is never autoloaded (it would change other projects'
pytest sessions): say how to load it instead of failing on missing fixtures."""
from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("conformance.plugin"):
        pytest.exit("batchspec: the conformance suites need the batchspec plugin: "
                    "pytest -p conformance.plugin --pyargs conformance --target URL [--profile FILE]", returncode=2)
