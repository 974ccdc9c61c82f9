"""Connect times on the emulated 3G link, for every transport: counted in
round trips they are what the protocols promise (TLS 1.3 three to
CONNACK, QUIC two, QUIC with 0-RTT one, TCP two), plus the link's
serialisation of the handshake packets.

One dumbbell (3g profile, userspace backend): r1 runs Mosquitto and the
QUIC gateway, l1 runs the load generator across the bottleneck.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from runner import certs as runcerts, mosquitto

BIN = os.environ.get("BENCH_BIN", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "build", "release", "bin"))
CONNECTS = 12


def wait_file(path, proc, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"{what} did not start: {err}")
        time.sleep(0.05)


@pytest.fixture
def testbed(linkem, quiet_mininet):
    from topologies.dumbbell import dumbbell
    for tool in ("loadgen", "gateway"):
        if not os.access(os.path.join(BIN, tool), os.X_OK):
            pytest.fail(f"{BIN}/{tool} is missing: build it first (make)")
    d = tempfile.mkdtemp(prefix="mqb-transports-")
    os.chmod(d, 0o755)
    c = runcerts.broker_set(d, ["broker"], ["10.0.2.1"])
    # the project's one launcher, no inflight window; TCP and TLS
    # listeners on every address of r1 (the gateway reaches TCP on
    # 127.0.0.1)
    broker = mosquitto.Broker(d, [
        mosquitto.Listener(1883),
        mosquitto.Listener(8883, certfile=c["broker"],
                           keyfile=c["broker_key"])],
        settings={"max_inflight_messages": 0},
        comment="written by topologies/tests/test_transports.py")
    try:
        # cubic for TCP as for QUIC (ngtcp2's default), whatever the VM's
        with dumbbell("3g", backend="userspace", hosts=1, seed=3,
                      congestion_control="cubic") as db:
            broker.start(popen=lambda argv, **kw: db.popen("r1", argv, **kw),
                         probe=mosquitto.namespace_probe(
                             lambda argv: db.run("r1", argv, timeout=10)))
            ready = os.path.join(d, "gw.ready")
            gw = db.popen("r1", [os.path.join(BIN, "gateway"),
                                 "--listen", "10.0.2.1", "--cert",
                                 c["broker"], "--key", c["broker_key"],
                                 "--broker-port", "1883", "--ready-file",
                                 ready, "--json", os.devnull],
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
            wait_file(ready, gw, "gateway")
            yield db, d
            gw.terminate()
            broker.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def connect_p50(db, d, *args):
    out = os.path.join(d, "lg.json")
    p = db.run("l1", [os.path.join(BIN, "loadgen"), "--host", "10.0.2.1",
                      "--count", "1", "--qos", "1", "--rate", "0",
                      "--cycles", str(CONNECTS), "--json", out,
                      "--connect-timeout", "20s", *args], timeout=120,
               text=True)
    assert p.returncode == 0, p.stderr
    with open(out) as f:
        doc = json.load(f)
    return doc, doc["connect"]["total"]["p50_us"] / 1000.0


def test_connect_round_trips_on_3g(testbed):
    db, d = testbed
    rtt = 2 * 40.0  # ms: the profile's delay, each way
    tcp_doc, tcp = connect_p50(db, d, "--port", "1883")
    tls_doc, tls = connect_p50(db, d, "--transport", "tls", "--port",
                               "8883", "--cafile", f"{d}/ca.pem")
    quic_doc, quic = connect_p50(db, d, "--transport", "quic",
                                 "--cafile", f"{d}/ca.pem")
    zr_doc, zr = connect_p50(db, d, "--transport", "quic", "--cafile",
                             f"{d}/ca.pem", "--early-data")
    print(f"\n     3g connect to CONNACK, median of {CONNECTS}: tcp "
          f"{tcp:.1f} ms, tls {tls:.1f} ms, quic {quic:.1f} ms, quic 0-rtt "
          f"{zr:.1f} ms (RTT {rtt:.0f} ms)")
    # the round trips, plus what 1 Mbit/s adds to serialise the packets:
    # a few ms for TCP's small segments, tens of ms for TLS certificates
    # and QUIC's padded 1200-byte Initials (~10 ms each at 1 Mbit/s)
    assert 2 * rtt <= tcp < 2 * rtt + 25, tcp
    assert 3 * rtt <= tls < 3 * rtt + 60, tls
    assert 2 * rtt <= quic < 2 * rtt + 60, quic
    # 0-RTT: CONNECT leaves with the first flight; most of the connects
    # (all but the first) are resumed
    e = zr_doc["early_data"]
    assert e["accepted"] >= CONNECTS - 2, e
    assert 1 * rtt <= zr < 1 * rtt + 60, zr
    assert zr < quic < tls
