"""Tests of webclient/_shared/__init__.py: one version string for both packages."""

from __future__ import annotations

import importlib.metadata

import webclient
import webserver
from webclient._shared import VERSION
from webclient.config import ClientConfig


def test_one_version_everywhere() -> None:
    """Both packages, the installed distribution and the client's User-Agent say one version."""
    assert webserver.__version__ == webclient.__version__ == VERSION
    assert importlib.metadata.version("webserver") == VERSION
    assert ClientConfig().user_agent == f"webclient/{VERSION}"
