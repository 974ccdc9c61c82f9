"""The study's arms that need loadgen's --flows and TCP/TLS migration, end
to end on the dumbbell (4g profile): hol's one-connection arm on every
transport (four flows in one MQTT session: four publishers at the
subscriber, the head-of-line figures computed), and migration on every
transport (QUIC migrates; TCP and TLS reconnect with the persistent
session: down for at least their handshakes' round trips, nothing lost,
the delivery gap figure drawn for all three). The scenarios are the
shipped ones cut short."""
import json
import os
import textwrap

import pytest

from runner.tests.conftest import run_runner

HOL_ONE = """
# hol's one-connection arm (scenarios/hol.toml), 10 ms, 2 % loss, 5 s
name = "hol1"
hosts = 2
mqtt = "3.1.1"
drain = "3s"
figures = ["hol"]
[link]
delay = "10ms"
loss = "2%"
[[publisher]]
name = "device"
host = "l1"
clients = 1
flows = 4
topic = "hol/flow{f}"
size = 64
qos = 1
rate = 20.0
count = 100
[[subscriber]]
name = "collector"
host = "r2"
topics = ["hol/#"]
qos = 1
raw = true
"""

MIGRATION = """
# scenarios/migration.toml, 6 s, the move after message 20
name = "mig"
hosts = 2
mqtt = "3.1.1"
drain = "5s"
figures = ["gap"]
[[publisher]]
name = "device"
host = "l1"
clients = 1
topic = "mobile/device0/telemetry"
size = 64
qos = 1
rate = 10.0
count = 60
persistent = true
migrate_after = 20
[[subscriber]]
name = "collector"
host = "r2"
topics = ["mobile/#"]
qos = 1
raw = true
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: the runner builds the Mininet dumbbell")
    d = tmp_path_factory.mktemp("study")
    paths = []
    for name, text in (("hol1", HOL_ONE), ("mig", MIGRATION)):
        p = d / f"{name}.toml"
        p.write_text(textwrap.dedent(text))
        paths.append(str(p))
    res = str(d / "results")
    r = run_runner(["bench", "--scenarios", ",".join(paths), "--profiles",
                    "4g", "--transports", "tcp,tls,quic", "--reps", "1",
                    "--results", res], timeout=900)
    run_dir = os.path.realpath(os.path.join(res, "latest"))
    cells = {}
    for n in os.listdir(os.path.join(run_dir, "cells")):
        with open(os.path.join(run_dir, "cells", n, "cell.json")) as f:
            c = json.load(f)
        cells[(c["scenario"], c["transport"])] = (c, os.path.join(
            run_dir, "cells", n))
    return r, run_dir, cells


def _loadgen(cell, cdir):
    rec = next(p for p in cell["processes"] if p["kind"] == "publisher")
    with open(os.path.join(cdir, rec["json"])) as f:
        return json.load(f)


def _rtt_ms(cell):
    p = cell["topology"]["profile"]
    return (p["left_to_right"]["delay_us"] +
            p["right_to_left"]["delay_us"]) / 1000


def test_every_cell_ran(study):
    r, _, cells = study
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert len(cells) == 6
    for key, (c, _) in cells.items():
        assert c["status"] == "ok", (key, c.get("error"))


@pytest.mark.parametrize("transport", ["tcp", "tls", "quic"])
def test_hol_one_connection(study, transport):
    """One connection, one session, four flows: four publishers at the
    subscriber, each complete (QoS 1), and the head-of-line figures."""
    c, cdir = study[2][("hol1", transport)]
    lg = _loadgen(c, cdir)
    assert lg["totals"]["connections"] == 1
    assert [f["topic"] for f in lg["connections"][0]["flows"]] == \
        [f"hol/flow{f}" for f in range(4)]
    m = c["metrics"]
    assert m["delivery"]["expected"] == m["delivery"]["received"] == 400
    h = m["flows"]["collector"]
    assert h["flows"] == 4
    assert h["spread_p50_ms"] is not None and h["coincidence"] is not None


def test_migration_on_every_transport(study):
    """QUIC validates the new path in about a round trip; TCP and TLS are
    down from the drop to the new CONNACK: TCP's handshake and MQTT's
    CONNECT (2 round trips), TLS one more (resumed, still a round trip);
    nothing lost; the delivery gap is measured for all three and drawn."""
    _, run_dir, cells = study
    for t in ("tcp", "tls", "quic"):
        c, cdir = cells[("mig", t)]
        rtt = _rtt_ms(c)
        m = c["metrics"]["migration"]
        assert m["moves"] == m["done"] == 1, m
        mv = _loadgen(c, cdir)["connections"][0]["migration"]
        if t == "quic":
            assert mv["kind"] == "migration"
            assert rtt <= m["path_validation_ms"] < 5000, m
        else:
            assert mv["kind"] == "reconnect" and mv["session_present"]
            rounds = 2 if t == "tcp" else 3
            assert rounds * rtt <= m["down_ms"] < 5000, m
            assert mv["tls_resumed"] is (True if t == "tls" else None)
        d = c["metrics"]["delivery"]
        assert d["expected"] == d["received"] == 60, d
        assert m["gap_ms"] is not None and m["gap_ms"] > 0, m
    for fmt in ("png", "svg"):
        p = os.path.join(run_dir, "figures", f"gap_mig.{fmt}")
        assert os.path.getsize(p) > 1000, p
    with open(os.path.join(run_dir, "data", "gap_mig.dat")) as f:
        rows = [l.split() for l in f if not l.startswith("#")]
    # the profile, then mean, low and high of each transport: all three
    assert len(rows) == 1 and len(rows[0]) == 1 + 3 * 3, rows
    assert "NaN" not in rows[0], rows
