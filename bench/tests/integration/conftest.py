"""Fixtures for the integration tests of the benchmark binaries.

A real Mosquitto runs with its own configuration in a temporary directory,
on free loopback ports, started by the project's one launcher
(runner/mosquitto.py, which also holds the settings and why):

  tcp      anonymous clients allowed
  tls      the same, over TLS, with a certificate for 127.0.0.1 and
           "localhost" signed by a CA generated at test time (certtool)
  noanon   TCP with allow_anonymous false: every CONNECT is refused
  maxqos1  TCP with max_qos 1: a QoS 2 subscription is granted QoS 1
  readonly TCP with an ACL that allows reading only: every PUBLISH is
           refused (MQTT 5: PUBACK/PUBREC reason 0x87 "not authorized")

and the project's QUIC gateway in front of the tcp listener (UDP, a free
port on 127.0.0.1, the same broker certificate), so that every transport
reaches the same broker.

The broker's queues are unlimited (max_queued_messages 0, the launcher's
default) and it has no inflight window (max_inflight_messages 0), so it
never drops a message on purpose and any loss a test sees is the tools'
fault; set_tcp_nodelay is on. One broker serves the
whole session; tests use distinct topics so they cannot see each other's
messages. The binaries come from $BENCH_BIN (default build/release/bin).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)
from runner import certs as runcerts, mosquitto  # noqa: E402
BIN = os.environ.get("BENCH_BIN", os.path.join(ROOT, "build", "release",
                                               "bin"))


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port():
    """A UDP port on 127.0.0.1 that nobody is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=10.0):
    """True once port accepts connections on 127.0.0.1, False if proc
    exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if mosquitto.local_probe([port]):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def certs():
    """CA, broker certificate (127.0.0.1 and localhost), and a second CA
    that did not sign anything (for the failure cases)."""
    d = tempfile.mkdtemp(prefix="bench-certs-")
    c = runcerts.broker_set(d, ["localhost"], ["127.0.0.1"])
    runcerts.make_ca(d, "wrongca")
    yield {"ca": c["ca"], "broker": c["broker"],
           "broker_key": c["broker_key"],
           "wrongca": os.path.join(d, "wrongca.pem"), "dir": d}
    shutil.rmtree(d, ignore_errors=True)


class Broker:
    """The session's broker, started by the project's one launcher
    (runner/mosquitto.py) with unlimited queues and no inflight window
    (max_inflight_messages 0), listeners on free loopback ports."""

    def __init__(self, certs):
        self.dir = tempfile.mkdtemp(prefix="bench-mosquitto-")
        self.tcp, self.tls, self.noanon = free_port(), free_port(), \
            free_port()
        self.maxqos1, self.readonly = free_port(), free_port()
        acl = os.path.join(self.dir, "readonly.acl")
        with open(acl, "w") as f:
            f.write("topic read #\n")
        lo = "127.0.0.1"
        self.b = mosquitto.Broker(self.dir, [
            mosquitto.Listener(self.tcp, lo),
            mosquitto.Listener(self.tls, lo, certs["broker"],
                               certs["broker_key"]),
            mosquitto.Listener(self.noanon, lo, name="noanon",
                               allow_anonymous="false"),
            mosquitto.Listener(self.maxqos1, lo, name="maxqos1", max_qos=1),
            mosquitto.Listener(self.readonly, lo, name="readonly",
                               acl_file=acl),
        ], settings={"max_inflight_messages": 0},
            log_types=["error", "warning", "notice"],
            comment="written by bench/tests/integration/conftest.py")
        self.conf, self.log = self.b.conf, self.b.log
        try:
            self.b.start()
        except mosquitto.BrokerError as e:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {e}") from None

    # A test may restart the broker itself (mosquitto -c self.conf) and
    # set proc: stop() then stops that one.
    @property
    def proc(self):
        return self.b.proc

    @proc.setter
    def proc(self, p):
        self.b.proc = p

    def read_log(self):
        return self.b.read_log()

    def stop(self):
        self.b.stop(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


class Gateway:
    """The QUIC gateway relaying to the broker's tcp listener. Its
    statistics document is read with stats() (SIGUSR1, then the file)."""

    def __init__(self, broker, certs, extra=()):
        self.dir = tempfile.mkdtemp(prefix="bench-gateway-")
        self.port = free_udp_port()
        self.json = os.path.join(self.dir, "gateway.json")
        self.ready = os.path.join(self.dir, "ready")
        exe = os.path.join(BIN, "gateway")
        if not os.access(exe, os.X_OK):
            pytest.fail(f"{exe} is missing: build it first (make)")
        self.proc = subprocess.Popen(
            [exe, "--listen", "127.0.0.1", "--port", str(self.port),
             "--cert", certs["broker"], "--key", certs["broker_key"],
             "--broker", "127.0.0.1", "--broker-port", str(broker.tcp),
             "--json", self.json, "--ready-file", self.ready, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.stop()
                raise RuntimeError(f"gateway did not start: {err}")
            time.sleep(0.02)

    def stats(self):
        """The statistics as of now (the gateway keeps running)."""
        before = os.stat(self.json).st_mtime_ns if \
            os.path.exists(self.json) else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.path.exists(self.json) and \
                    os.stat(self.json).st_mtime_ns != before:
                with open(self.json) as f:
                    return json.load(f)
            time.sleep(0.01)
        raise AssertionError("the gateway wrote no statistics on SIGUSR1")

    def stop(self):
        """Stop it; returns its stderr."""
        err = ""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                _, err = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err = self.proc.communicate()
        else:
            _, err = self.proc.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)
        return err


@pytest.fixture(scope="session")
def gateway(broker, certs):
    g = Gateway(broker, certs)
    yield g
    err = g.stop()
    assert g.proc.returncode == 0, f"gateway failed: {err}"


@pytest.fixture(scope="session")
def broker(certs):
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed (run 'make deps')")
    b = Broker(certs)
    yield b
    b.stop()


class Result:
    def __init__(self, rc, stdout, stderr, doc):
        self.rc, self.stdout, self.stderr, self.doc = rc, stdout, stderr, doc

    @property
    def err_lines(self):
        return [l for l in self.stderr.splitlines() if l.strip()]

    def __repr__(self):
        return f"Result(rc={self.rc}, stderr={self.stderr!r})"


class Proc:
    """A binary running in the background (sink, idle loadgen)."""

    def __init__(self, argv, json_path, ready, env=None):
        self.json_path, self.ready = json_path, ready
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=env)

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.ready):
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        out, err = self.finish(timeout=5)
        raise AssertionError(f"not ready: rc={self.proc.returncode} "
                             f"stderr={err!r}")

    def finish(self, timeout=60.0):
        try:
            return self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"did not finish in {timeout} s; "
                                 f"stderr={err!r}")

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def result(self, timeout=60.0):
        out, err = self.finish(timeout)
        doc = None
        if os.path.exists(self.json_path):
            with open(self.json_path) as f:
                doc = json.load(f)
        return Result(self.proc.returncode, out, err, doc)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


class Bench:
    """Runs loadgen and sink against the session's broker."""

    def __init__(self, broker, certs, tmp, gateway=None):
        self.broker, self.certs, self.tmp = broker, certs, tmp
        self.gateway = gateway
        self.procs = []
        self.n = 0

    def exe(self, tool):
        path = os.path.join(BIN, tool)
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: build it first (make), or "
                        "set BENCH_BIN")
        return path

    def topic(self):
        """A topic prefix no other test uses."""
        return "t/" + uuid.uuid4().hex[:12]

    def _path(self, stem):
        self.n += 1
        return os.path.join(self.tmp, f"{stem}{self.n}")

    def conn_args(self, transport="tcp", port=None):
        if transport == "quic":
            return ["--port", str(port or self.gateway.port),
                    "--transport", "quic", "--cafile", self.certs["ca"]]
        if transport == "tls":
            return ["--port", str(port or self.broker.tls), "--transport",
                    "tls", "--cafile", self.certs["ca"]]
        return ["--port", str(port or self.broker.tcp)]

    @staticmethod
    def _env(env):
        return None if env is None else dict(os.environ, **env)

    def run(self, tool, *args, json_out=True, timeout=60.0, env=None):
        argv = [self.exe(tool), *map(str, args)]
        jp = None
        if json_out:
            jp = self._path(tool) + ".json"
            argv += ["--json", jp]
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               timeout=timeout, env=self._env(env))
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{tool} did not finish in {timeout} s: "
                                 f"{e.stderr!r}")
        doc = None
        if jp and os.path.exists(jp):
            with open(jp) as f:
                doc = json.load(f)
        return Result(p.returncode, p.stdout, p.stderr, doc)

    def start(self, tool, *args, env=None):
        """Start tool in the background with --json and --ready-file;
        returns once it is ready (sink: subscribed; loadgen: connected)."""
        jp = self._path(tool) + ".json"
        ready = self._path(tool) + ".ready"
        argv = [self.exe(tool), *map(str, args), "--json", jp,
                "--ready-file", ready]
        p = Proc(argv, jp, ready, self._env(env))
        self.procs.append(p)
        p.wait_ready()
        return p

    def cleanup(self):
        for p in self.procs:
            p.kill()


@pytest.fixture
def bench(broker, certs, gateway, tmp_path):
    b = Bench(broker, certs, str(tmp_path), gateway)
    yield b
    b.cleanup()


# ---- structure of the result documents -------------------------------------

HIST_KEYS = ("count", "min_us", "mean_us", "p50_us", "p90_us", "p99_us",
             "p99_9_us", "max_us", "clamped")

COMMON_KEYS = {
    "tool": str, "tool_version": str, "schema": int, "meta": dict,
    "errors": list, "config": dict, "start": dict, "end": dict,
    "stop_reason": str, "status": str, "resources": dict,
}

TOOL_KEYS = {
    "loadgen": {"totals": dict, "throughput": dict, "connect": dict,
                "memory": dict, "connections": list,
                "schedule_lag": (dict, type(None)), "socket": dict,
                "publishers": list, "completeness": dict},
    "sink": {"subscription": dict, "messages": dict, "throughput": dict,
             "latency": dict, "latency_from_schedule": dict,
             "sequence": dict, "transfer": dict, "socket": dict,
             "drain": (dict, type(None))},
}


def check_socket(sock, where):
    """The send path's settings every client document records."""
    assert sock["max_outbuf_bytes"] == 1 << 20, where
    for k in ("so_sndbuf_bytes", "so_rcvbuf_bytes", "tcp_nodelay"):
        assert k in sock["requested"], f"{where}: requested.{k}"
    for k in ("net.ipv4.tcp_wmem", "net.core.wmem_default"):
        assert k in sock["sysctl"], f"{where}: sysctl.{k}"
    for when in ("at_connect", "at_close"):
        seen = sock[when]
        if seen is None:
            continue
        assert seen["connections"] > 0, where
        assert 0 < seen["so_sndbuf_bytes"]["min"] <= \
            seen["so_sndbuf_bytes"]["max"], where
        assert seen["tcp_nodelay"] in (True, False, None), where


def check_hist(h, where):
    for k in HIST_KEYS:
        assert k in h, f"{where}: no {k}"
    if h["count"]:
        vals = [h[k] for k in ("min_us", "p50_us", "p90_us", "p99_us",
                               "p99_9_us", "max_us")]
        assert all(isinstance(v, (int, float)) for v in vals), where
        assert vals == sorted(vals), f"{where}: not ordered: {vals}"
    if "buckets" in h:
        assert sum(c for _, c in h["buckets"]) == h["count"], where


def check_doc(doc, tool):
    """Keys and types every consumer of the JSON relies on."""
    assert doc is not None, "no JSON document written"
    for k, t in list(COMMON_KEYS.items()) + list(TOOL_KEYS[tool].items()):
        assert k in doc, f"{tool}: key {k} missing"
        assert isinstance(doc[k], t), f"{tool}: {k} is not {t}"
    assert doc["tool"] == tool
    for k in ("hostname", "kernel", "pid", "versions", "build"):
        assert k in doc["meta"], f"meta.{k} missing"
    for k in ("gnutls", "jansson", "tool"):
        assert k in doc["meta"]["versions"]
    for k in ("iso", "unix"):
        assert k in doc["start"] and k in doc["end"]
    assert doc["end"]["unix"] >= doc["start"]["unix"]
    for k in ("cpu_user_s", "cpu_sys_s", "cpu_total_s", "max_rss_kib"):
        assert doc["resources"][k] >= 0
    assert doc["resources"]["max_rss_kib"] > 0
    conn = doc["config"]["connection"]
    for k in ("host", "port", "transport", "mqtt_version", "qos"):
        assert k in conn, f"config.connection.{k} missing"
    check_socket(doc["socket"], tool)
    if tool == "loadgen":
        for k in ("connections", "connected", "failed", "messages_sent",
                  "payload_bytes_sent"):
            assert k in doc["totals"], f"totals.{k} missing"
        for k in ("tcp", "transport", "mqtt", "total"):
            check_hist(doc["connect"][k], f"connect.{k}")
        for c in doc["connections"]:
            for k in ("index", "client_id", "publisher_id", "topic",
                      "state", "connect", "sent", "written", "first_seq",
                      "last_seq", "error"):
                assert k in c, f"connections[].{k} missing"
        assert len(doc["publishers"]) == doc["config"]["clients"] * \
            doc["config"]["flows_per_client"]
        for p in doc["publishers"]:
            for k in ("id", "topic", "state", "queued", "written",
                      "first_seq", "last_seq"):
                assert k in p, f"publishers[].{k} missing"
            assert 0 <= p["written"] <= p["queued"]
        t = doc["totals"]
        assert t["messages_written"] == sum(p["written"]
                                            for p in doc["publishers"])
        assert t["messages_written"] + t["messages_unwritten"] == \
            t["messages_sent"]
        c = doc["completeness"]
        assert c["ok"] == (c["why"] is None)
        assert c["never_connected"] == c["failed"] + c["abandoned"] + \
            c["not_started"]
        assert c["ok"] or doc["status"] == "failed"
        if conn["qos"] > 0:
            check_hist(doc["ack_latency"], "ack_latency")
        for k in ("publish_span_s", "messages_per_s", "steady_state",
                  "configured_messages_per_s"):
            assert k in doc["throughput"], f"throughput.{k} missing"
        for k in ("rss_start_kib", "rss_connected_kib", "per_connection_kib",
                  "ack_histograms_kib"):
            assert k in doc["memory"], f"memory.{k} missing"
        # a schedule exists exactly when a rate is set
        scheduled = doc["config"]["rate_per_client"] > 0 and \
            not doc["config"]["idle"]
        assert (doc["schedule_lag"] is not None) == scheduled
        if scheduled:
            check_hist(doc["schedule_lag"], "schedule_lag")
            assert doc["schedule_lag"]["late_threshold_us"] == 1000.0
            assert 0 <= doc["schedule_lag"]["late_messages"] <= \
                doc["schedule_lag"]["count"]
            # every message sent records its lag
            assert doc["schedule_lag"]["count"] == \
                doc["totals"]["messages_sent"]
    else:
        for k in ("received", "bytes", "bench", "foreign", "foreign_bytes",
                  "invalid", "bad_version"):
            assert k in doc["messages"], f"messages.{k} missing"
        m = doc["messages"]
        assert m["bench"] + m["foreign"] == m["received"]
        assert m["invalid"] + m["bad_version"] <= m["foreign"]
        check_hist(doc["latency"], "latency")
        assert "buckets" in doc["latency"]
        check_hist(doc["latency_from_schedule"], "latency_from_schedule")
        # every benchmark message with a due time and no clock error has
        # both latencies
        assert doc["latency_from_schedule"]["count"] <= \
            doc["latency"]["count"]
        assert doc["latency_from_schedule"]["count"] + m["unscheduled"] >= \
            doc["latency"]["count"]
        for k in ("publishers", "lost", "duplicates", "reordered",
                  "per_publisher"):
            assert k in doc["sequence"], f"sequence.{k} missing"
        for k in ("first_to_last_s", "messages_per_s"):
            assert k in doc["throughput"]
