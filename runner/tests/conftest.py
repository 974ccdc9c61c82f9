"""Fixtures of the runner's tests.

Unit tests (scenarios, statistics, metrics, command line) need nothing.
The end-to-end tests build the dumbbell: they need root and the binaries
($BENCH_BIN, default build/release/bin; `make test` sets it after
building), and run with the system Python (/usr/bin/python3). The
expensive run, `make bench QUICK=1`, happens once per session and its
results folder is shared by the tests that check it.
"""
import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
SCHEMA_DIR = os.path.join(REPO, "runner", "schema")
BIN = os.environ.get("BENCH_BIN") or os.path.join(REPO, "build", "release",
                                                  "bin")
PY = "/usr/bin/python3"


def runner_env(**extra):
    env = dict(os.environ, BENCH_BIN=BIN)
    for k in ("SCENARIOS", "PROFILES", "TRANSPORTS", "REPS", "QUICK",
              "LIST", "RESUME", "CAPTURE", "QLOG", "RAW", "SEED", "BACKEND", "CCA",
              "RESULTS"):
        env.pop(k, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_runner(args, timeout=600, **env):
    """python3 -m runner ARGS in the repository: CompletedProcess."""
    return subprocess.run([PY, "-m", "runner", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env=runner_env(**env))


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("needs root: the runner builds the Mininet dumbbell")
    for t in ("loadgen", "sink", "linkem"):
        if not os.access(os.path.join(BIN, t), os.X_OK):
            pytest.fail(f"{BIN}/{t} is missing: run make first")


class QuickRun:
    def __init__(self, results_dir, proc, wall):
        self.results = results_dir
        self.proc = proc
        self.wall = wall
        self.dir = os.path.realpath(os.path.join(results_dir, "latest"))

    def load(self, name):
        with open(os.path.join(self.dir, name)) as f:
            return json.load(f)

    def cells(self):
        d = os.path.join(self.dir, "cells")
        out = []
        for n in sorted(os.listdir(d)):
            with open(os.path.join(d, n, "cell.json")) as f:
                out.append(json.load(f))
        return out

    def cell_doc(self, cell, name):
        with open(os.path.join(self.dir, "cells", cell["id"], name)) as f:
            return json.load(f)


@pytest.fixture(scope="session")
def quick(tmp_path_factory):
    """`make bench QUICK=1` once, into a temporary results folder."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the runner builds the Mininet dumbbell")
    res = str(tmp_path_factory.mktemp("results"))
    t0 = time.monotonic()
    p = subprocess.run(["make", "-s", "--no-print-directory", "bench",
                        "QUICK=1", f"RESULTS={res}"], cwd=REPO,
                       capture_output=True, text=True, timeout=900,
                       env=runner_env(BENCH_BIN=BIN))
    q = QuickRun(res, p, time.monotonic() - t0)
    if not os.path.exists(os.path.join(q.dir, "summary.json")):
        pytest.fail(f"make bench QUICK=1 wrote no summary (status "
                    f"{p.returncode}):\n{p.stdout[-3000:]}\n"
                    f"{p.stderr[-3000:]}")
    return q


@pytest.fixture(scope="session")
def validate():
    """validate(doc, "cell") against runner/schema/cell.schema.json."""
    import jsonschema
    store = {}
    for name in os.listdir(SCHEMA_DIR):
        if name.endswith(".schema.json"):
            with open(os.path.join(SCHEMA_DIR, name)) as f:
                s = json.load(f)
            store[s["$id"]] = s
            store["file://" + os.path.join(SCHEMA_DIR, name)] = s
    for s in store.values():
        jsonschema.Draft202012Validator.check_schema(s)

    def check(doc, kind):
        schema = store[f"{kind}.schema.json"]
        resolver = jsonschema.RefResolver(
            base_uri="file://" + SCHEMA_DIR + "/", referrer=schema,
            store=store)
        v = jsonschema.Draft202012Validator(schema, resolver=resolver)
        errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}"
            for e in errors[:5])
    return check
