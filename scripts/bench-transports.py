#!/usr/bin/python3
"""bench-transports.py: TCP, TLS and QUIC side by side on loopback,
through one Mosquitto. A benchmark: it measures and prints; targets are
printed next to the figures.

Usage: scripts/bench-transports.py [-n MESSAGES] [-r REPETITIONS]
                                   [-c IDLE_CONNECTIONS]
  BENCH_BIN   directory of loadgen, sink and gateway (default
              build/release/bin)

Setup: a private Mosquitto (user root, set_tcp_nodelay true, no queue or
inflight limits, TCP and TLS listeners on free loopback ports) and the
project's QUIC gateway in front of its TCP listener (UDP, a free port,
TCP_NODELAY towards the broker). TLS and QUIC use the same ECDSA P-256
certificate, made here with certtool. TCP and TLS reach the broker
directly; QUIC goes through the gateway, whose cost is part of the QUIC
figures and also shown apart.

(a) Throughput, QoS 0 and QoS 1, MQTT 3.1.1, N messages (default 100,000)
    of 64 bytes, one publisher and one subscriber on the same transport, as
    fast as the window and sockets allow; the transports take turns, R
    (default 3) times. Rate: at the subscriber, from its first to its last
    message (sink's throughput.messages_per_s). CPU per message: user +
    system time of each process over the run (loadgen and sink from their
    JSON; Mosquitto and the gateway from /proc, before and after), divided
    by N. Target: QUIC at least half of TCP's rate.

(b) Memory, C (default 1,000) idle connections of one loadgen process per
    transport (keepalive 60 s): the process's RSS growth per connection
    (its own reading, memory.per_connection_kib), the broker's and, for
    QUIC, the gateway's RSS growth per connection (/proc VmRSS before and
    once all are connected). Target: one gateway holds 1,000 QUIC
    connections (its statistics count them all at once).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BENCH_BIN", os.path.join(ROOT, "build", "release",
                                               "bin"))
TICK = os.sysconf("SC_CLK_TCK")
sys.path.insert(0, ROOT)
from runner import certs as runcerts, mosquitto  # noqa: E402


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_for(path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"error: {proc.args[0]} did not get ready")
        time.sleep(0.02)


class Setup:
    """Mosquitto through the project's one launcher (runner/mosquitto.py:
    its settings, here with no inflight window), TCP and TLS listeners on
    free loopback ports, run-time certificates (runner/certs.py), and the
    gateway in front of the TCP listener."""

    def __init__(self, work):
        self.work = work
        self.tcp, self.tls = free_port(), free_port()
        self.quic = free_port(socket.SOCK_DGRAM)
        c = runcerts.broker_set(work, ["localhost"], ["127.0.0.1"])
        self.ca = c["ca"]
        lo = "127.0.0.1"
        self.mosq = mosquitto.Broker(work, [
            mosquitto.Listener(self.tcp, lo),
            mosquitto.Listener(self.tls, lo, c["broker"], c["broker_key"])],
            settings={"max_inflight_messages": 0},
            comment="written by scripts/bench-transports.py")
        try:
            self.mosq.start()
        except mosquitto.BrokerError as e:
            raise SystemExit(f"error: mosquitto did not start: {e}")
        self.broker, self.gateway = self.mosq.proc, None
        ready = os.path.join(work, "gw.ready")
        self.gw_json = os.path.join(work, "gw.json")
        try:
            self.gateway = subprocess.Popen(
                [os.path.join(BIN, "gateway"), "--listen", lo,
                 "--port", str(self.quic), "--cert", c["broker"],
                 "--key", c["broker_key"], "--broker-port", str(self.tcp),
                 "--json", self.gw_json, "--ready-file", ready],
                stdout=subprocess.DEVNULL)
            wait_for(ready, self.gateway)
        except BaseException:
            self.stop()
            raise

    def conn(self, transport):
        if transport == "tcp":
            return ["--port", str(self.tcp)]
        port = self.tls if transport == "tls" else self.quic
        return ["--transport", transport, "--port", str(port), "--cafile",
                self.ca]

    def gateway_stats(self):
        before = os.path.getmtime(self.gw_json) if \
            os.path.exists(self.gw_json) else 0
        self.gateway.send_signal(signal.SIGUSR1)
        for _ in range(500):
            if os.path.exists(self.gw_json) and \
                    os.path.getmtime(self.gw_json) != before:
                try:
                    with open(self.gw_json) as f:
                        return json.load(f)
                except ValueError:
                    pass
            time.sleep(0.01)
        return None

    def stop(self):
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.terminate()
            self.gateway.wait()
        self.mosq.stop()


def throughput(s, transport, qos, n, rep):
    d = os.path.join(s.work, f"t-{transport}-{qos}-{rep}")
    os.makedirs(d)
    topic = f"bench/{transport}/{qos}/{rep}"
    sink = subprocess.Popen(
        [os.path.join(BIN, "sink"), *s.conn(transport), "--topic", topic,
         "--qos", str(qos), "--count", str(n), "--idle-timeout", "30s",
         "--json", f"{d}/sink.json", "--ready-file", f"{d}/ready"])
    wait_for(f"{d}/ready", sink)
    b0, g0 = cpu_s(s.broker.pid), cpu_s(s.gateway.pid)
    lg = subprocess.run(
        [os.path.join(BIN, "loadgen"), *s.conn(transport), "--topic",
         topic, "--qos", str(qos), "--count", str(n), "--rate", "0",
         "--size", "64", "--inflight", "100", "--json", f"{d}/lg.json"])
    sink.wait()
    b1, g1 = cpu_s(s.broker.pid), cpu_s(s.gateway.pid)
    if lg.returncode or sink.returncode:
        raise SystemExit(f"error: {transport} QoS {qos} run failed")
    with open(f"{d}/sink.json") as f:
        sd = json.load(f)
    with open(f"{d}/lg.json") as f:
        ld = json.load(f)
    got = sd["messages"]["received"]
    clients = ld["resources"]["cpu_total_s"] + \
        sd["resources"]["cpu_total_s"]
    return {"rate": sd["throughput"]["messages_per_s"], "got": got,
            "clients_us": clients / n * 1e6,
            "broker_us": (b1 - b0) / n * 1e6,
            "gateway_us": (g1 - g0) / n * 1e6 if transport == "quic"
            else 0.0}


def idle(s, transport, c):
    d = os.path.join(s.work, f"idle-{transport}")
    os.makedirs(d)
    b0 = rss_kib(s.broker.pid)
    g0 = rss_kib(s.gateway.pid)
    p = subprocess.Popen(
        [os.path.join(BIN, "loadgen"), *s.conn(transport), "--idle",
         "--clients", str(c), "--keepalive", "60", "--connect-timeout",
         "30s", "--no-per-connection", "--json", f"{d}/lg.json",
         "--ready-file", f"{d}/ready"])
    wait_for(f"{d}/ready", p, timeout=300)
    b1, g1 = rss_kib(s.broker.pid), rss_kib(s.gateway.pid)
    held = None
    if transport == "quic":
        st = s.gateway_stats()
        held = st["quic"]["connections_now"] if st else None
    p.send_signal(signal.SIGTERM)
    p.wait()
    with open(f"{d}/lg.json") as f:
        ld = json.load(f)
    n = ld["totals"]["connected"]
    return {"connected": n, "client_kib": ld["memory"]["per_connection_kib"],
            "broker_kib": (b1 - b0) / n if n else 0,
            "gateway_kib": (g1 - g0) / n if n and transport == "quic"
            else 0, "held": held,
            "connect_p50_ms": ld["connect"]["total"]["p50_us"] / 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100000)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("-c", type=int, default=1000)
    a = ap.parse_args()
    for t in ("loadgen", "sink", "gateway"):
        if not os.access(os.path.join(BIN, t), os.X_OK):
            sys.exit(f"error: {BIN}/{t} is missing; run 'make' first")
    for t in ("mosquitto", "certtool"):
        if not shutil.which(t):
            sys.exit(f"error: {t} is not installed; run 'make deps'")
    work = tempfile.mkdtemp(prefix="bench-transports-")
    s = None
    try:
        s = Setup(work)
        ver = subprocess.run([os.path.join(BIN, "loadgen"), "--version"],
                             capture_output=True, text=True).stdout.strip()
        print(f"== bench-transports: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, "
              f"{os.uname().release}, {os.cpu_count()} cores\n   {ver}")
        transports = ("tcp", "tls", "quic")
        for qos in (0, 1):
            runs = {t: [] for t in transports}
            for rep in range(a.r):
                for t in transports:
                    runs[t].append(throughput(s, t, qos, a.n, rep))
            print(f"\n== (a) QoS {qos}, {a.n} messages of 64 bytes, 1 -> 1, "
                  f"medians of {a.r} (transports taking turns)")
            print(f"   {'':6s} {'msg/s':>9s} {'CPU us/msg: clients':>20s} "
                  f"{'broker':>7s} {'gateway':>8s}")
            med = {}
            for t in transports:
                r = runs[t]
                m = {k: statistics.median(x[k] for x in r)
                     for k in ("rate", "clients_us", "broker_us",
                               "gateway_us")}
                med[t] = m
                lost = [x["got"] for x in r if x["got"] != a.n]
                print(f"   {t:6s} {m['rate']:9.0f} {m['clients_us']:20.2f} "
                      f"{m['broker_us']:7.2f} {m['gateway_us']:8.2f}"
                      + (f"  (received {lost} of {a.n})" if lost else ""))
            ratio = med["quic"]["rate"] / med["tcp"]["rate"]
            print(f"   QUIC/TCP rate {ratio:.2f}; target >= 0.50: "
                  f"{'met' if ratio >= 0.5 else 'NOT met'}")
        print(f"\n== (b) {a.c} idle connections per transport, one loadgen")
        print(f"   {'':6s} {'connected':>9s} {'KiB/conn: loadgen':>18s} "
              f"{'broker':>7s} {'gateway':>8s} {'connect p50 ms':>15s}")
        for t in transports:
            r = idle(s, t, a.c)
            print(f"   {t:6s} {r['connected']:9d} {r['client_kib']:18.2f} "
                  f"{r['broker_kib']:7.2f} {r['gateway_kib']:8.2f} "
                  f"{r['connect_p50_ms']:15.2f}")
            if t == "quic":
                ok = r["held"] is not None and r["held"] >= a.c
                print(f"   the gateway held {r['held']} QUIC connections at "
                      f"once; target {a.c} fit: "
                      f"{'met' if ok else 'NOT met'}")
    finally:
        if s:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
