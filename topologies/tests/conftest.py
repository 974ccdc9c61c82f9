"""Shared fixtures of the topology tests.

Tests that build a topology need root and the linkem binary
($BENCH_BIN/linkem, default build/release/bin/linkem); without them they
skip and say why. They must run with the system Python (/usr/bin/python3),
the one that can import Mininet.
"""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from topologies import backends  # noqa: E402


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("needs root: it builds namespaces, bridges and veths")


@pytest.fixture
def linkem(root):
    """The linkem binary. Missing is a failure under `make test` (which
    sets BENCH_BIN after building it) and a skip in a bare pytest run."""
    try:
        return backends.find_linkem()
    except backends.BackendError as e:
        if os.environ.get("BENCH_BIN"):
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture
def quiet_mininet():
    from mininet.log import setLogLevel
    setLogLevel("warning")
