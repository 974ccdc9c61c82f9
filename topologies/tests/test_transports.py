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

from topologies import backends

BIN = os.environ.get("BENCH_BIN", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "build", "release", "bin"))
CONNECTS = 12


def certs(d):
    def certtool(*args):
        subprocess.run(["certtool", *args], cwd=d, check=True,
                       capture_output=True)
    with open(os.path.join(d, "ca.tmpl"), "w") as f:
        f.write('cn = "transports test ca"\nca\ncert_signing_key\n'
                'expiration_days = 2\n')
    with open(os.path.join(d, "broker.tmpl"), "w") as f:
        f.write('cn = "broker"\nip_address = "10.0.2.1"\ntls_www_server\n'
                'signing_key\nencryption_key\nexpiration_days = 2\n')
    certtool("--generate-privkey", "--key-type=ecdsa", "--outfile",
             "ca.key")
    certtool("--generate-self-signed", "--load-privkey", "ca.key",
             "--template", "ca.tmpl", "--outfile", "ca.pem")
    certtool("--generate-privkey", "--key-type=ecdsa", "--outfile",
             "broker.key")
    certtool("--generate-certificate", "--load-privkey", "broker.key",
             "--load-ca-certificate", "ca.pem", "--load-ca-privkey",
             "ca.key", "--template", "broker.tmpl", "--outfile",
             "broker.pem")


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
    certs(d)
    conf = os.path.join(d, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"""user root
persistence false
set_tcp_nodelay true
max_inflight_messages 0
max_queued_messages 0
per_listener_settings true
listener 1883 10.0.2.1
allow_anonymous true
listener 1884 127.0.0.1
allow_anonymous true
listener 8883 10.0.2.1
allow_anonymous true
certfile {d}/broker.pem
keyfile {d}/broker.key
""")
    try:
        with dumbbell("3g", backend="userspace", hosts=1, seed=3) as db:
            mq = db.popen("r1", ["mosquitto", "-c", conf])
            ready = os.path.join(d, "gw.ready")
            # the gateway checks the broker at start: retry until
            # Mosquitto listens
            gw = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                gw = db.popen("r1", [os.path.join(BIN, "gateway"),
                                     "--listen", "10.0.2.1", "--cert",
                                     f"{d}/broker.pem", "--key",
                                     f"{d}/broker.key", "--broker-port",
                                     "1884", "--ready-file", ready,
                                     "--json", os.devnull],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
                try:
                    wait_file(ready, gw, "gateway", timeout=5)
                    break
                except AssertionError:
                    gw.wait()
                    time.sleep(0.2)
            assert os.path.exists(ready), "the gateway never started"
            yield db, d
            gw.terminate()
            mq.terminate()
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
