"""Shared test configuration: hypothesis profiles and the ``--run-slow`` switch.

The default profile keeps the suite fast; ``--hypothesis-profile=long`` (or ``HYPOTHESIS_PROFILE``)
runs the property tests for much longer, and ``--run-slow`` adds the tests marked ``slow``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=5_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: selected with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def nginx_or_skip() -> str:
    """The nginx binary (on PATH, else /usr/sbin/nginx), the peer of the tests that need one;
    the test is skipped, saying so, where there is none."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.skip("nginx not installed: no nginx on PATH or in /usr/sbin (.ci/run installs it)")
    return binary
