"""Fixtures shared by functional tests."""
from __future__ import annotations

import pytest

from tests.functional.inproc_cluster import Cluster


@pytest.fixture
def admin_cluster(tmp_path):
    """Six in-process data servers and an api server app with an ADMIN_TOKEN."""
    running = Cluster(tmp_path)
    yield running
    running.close()
