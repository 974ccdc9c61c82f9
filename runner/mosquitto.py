"""The one Mosquitto launcher: the matrix runner, the integration tests
(bench/tests/integration/conftest.py) and scripts/bench-loopback.sh all
start their broker through this module, so the settings that change what
is measured are chosen in one place and recorded by everyone.

The settings, and why (../shared/notes/mosquitto-2.0.md):

  set_tcp_nodelay true      Nagle off on the broker's sockets. Without it a
                            TLS CONNECT to CONNACK on loopback takes about
                            42 ms instead of 0.15 ms (Nagle against delayed
                            ACK): a testbed artefact, not the transport.
                            The QUIC gateway's broker-side sockets do the
                            same (runner/transports.py).
  max_queued_messages 0     No limit on a client's queue (0 = unlimited in
  max_queued_bytes 0        2.0). Over a limit the broker drops silently,
                            and a drop would be counted as network loss.
                            The runner still reads the broker's $SYS drop
                            counter after every cell and fails the cell if
                            it moved (read_sys / dropped()).
  max_inflight_messages 20  Mosquitto's default, kept on purpose: it is the
                            Receive Maximum real devices see from this
                            broker, and it bounds the QoS 1/2 window of
                            loadgen (whose --inflight defaults to 20 too).
                            It never drops: messages over it wait in the
                            (unlimited) queue. Tests that want no window at
                            all pass 0.
  persistence false         Nothing survives a broker restart; no disk I/O
                            inside a measurement.
  sys_interval 1            $SYS counters refresh every second, so a cell
                            waits at most about a second for final counts.
  user root                 Started as root, Mosquitto would drop to the
                            mosquitto user, which cannot read per-run keys.
  per_listener_settings     allow_anonymous (off by default since 2.0) is
   true                     set on every listener explicitly.
  tls_version tlsv1.2       The minimum (2.0.9+); clients choose 1.3 by
                            default and record what they used.

Every value written is returned by describe() and stored with each result.

Command line (for shell scripts):

  /usr/bin/python3 -m runner.mosquitto serve --dir DIR --tcp PORT
      [--bind ADDR] [--set KEY=VALUE]... [--log-type TYPE]...
      --ready-file FILE

writes DIR/mosquitto.conf, starts `mosquitto -c` on it, waits until every
listener accepts connections, writes the broker's pid to FILE, and stays
until SIGTERM or SIGINT, which it passes on to the broker; its exit status
is the broker's (0 after a clean stop).
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time

# Settings that change what a benchmark measures; see the module comment.
DEFAULTS = {
    "per_listener_settings": "true",
    "user": "root",
    "persistence": "false",
    "set_tcp_nodelay": "true",
    "max_inflight_messages": "20",
    "max_queued_messages": "0",
    "max_queued_bytes": "0",
    "sys_interval": "1",
}
DEFAULT_LOG_TYPES = ("error", "warning", "notice")
TLS_MIN_VERSION = "tlsv1.2"
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0

# $SYS topics the runner reads after a cell: the drop counter that decides,
# and what explains it.
SYS_TOPICS = (
    "$SYS/broker/publish/messages/dropped",
    "$SYS/broker/publish/messages/received",
    "$SYS/broker/publish/messages/sent",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
    "$SYS/broker/clients/maximum",
    "$SYS/broker/heap/maximum",
    "$SYS/broker/store/messages/count",
)
SYS_DROPPED = "$SYS/broker/publish/messages/dropped"


class BrokerError(Exception):
    """One line: why the broker could not be started or read."""


class Listener:
    """One `listener` block: port, optional bind address, optional TLS
    (certfile, keyfile), and extra per-listener options (max_qos,
    acl_file, allow_anonymous ...)."""

    def __init__(self, port, bind=None, certfile=None, keyfile=None,
                 name=None, **options):
        self.port, self.bind = int(port), bind
        self.certfile, self.keyfile = certfile, keyfile
        self.name = name or ("tls" if certfile else "tcp")
        self.options = {"allow_anonymous": "true", "max_connections": "-1"}
        self.options.update({k: str(v) for k, v in options.items()})

    @property
    def tls(self):
        return bool(self.certfile)

    def lines(self):
        out = [f"listener {self.port}" + (f" {self.bind}" if self.bind
                                          else "")]
        out += [f"{k} {v}" for k, v in self.options.items()]
        if self.tls:
            out += [f"certfile {self.certfile}", f"keyfile {self.keyfile}",
                    f"tls_version {TLS_MIN_VERSION}"]
        return out

    def to_dict(self):
        return {"name": self.name, "port": self.port, "bind": self.bind,
                "tls": self.tls, "options": dict(self.options)}


def version():
    """"2.0.11", or None if mosquitto is not installed."""
    try:
        r = subprocess.run(["mosquitto", "-h"], capture_output=True,
                           text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for word in (r.stdout + r.stderr).split():
        if word[:1].isdigit() and "." in word:
            return word
    return None


# local_probe run inside another network namespace: exits 0 once every
# port given accepts on 127.0.0.1 there (within a second), else 1.
_NS_PROBE = """import socket, sys, time
end = time.monotonic() + 1.0
while True:
    try:
        for p in sys.argv[1:]:
            socket.create_connection(("127.0.0.1", int(p)), 0.2).close()
        sys.exit(0)
    except OSError:
        if time.monotonic() > end:
            sys.exit(1)
        time.sleep(0.02)
"""


def namespace_probe(run):
    """A probe for Broker.start when the broker runs on an emulated host:
    run(argv) runs argv on that host and returns a CompletedProcess (a
    dumbbell's db.run with the host bound)."""
    def probe(ports):
        return run([sys.executable, "-c", _NS_PROBE] +
                   [str(p) for p in ports]).returncode == 0
    return probe


def local_probe(ports, host="127.0.0.1"):
    """True when every port accepts a TCP connection on host."""
    for port in ports:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                pass
        except OSError:
            return False
    return True


class Broker:
    """A private Mosquitto with its own config in `workdir`.

    settings override DEFAULTS (a value of None removes a setting);
    log_types replace DEFAULT_LOG_TYPES. Nothing starts before start()."""

    def __init__(self, workdir, listeners, settings=None, log_types=None,
                 comment="written by runner/mosquitto.py"):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.listeners = list(listeners)
        self.settings = dict(DEFAULTS)
        for k, v in (settings or {}).items():
            if v is None:
                self.settings.pop(k, None)
            else:
                self.settings[k] = str(v)
        self.log_types = list(log_types or DEFAULT_LOG_TYPES)
        self.comment = comment
        self.conf = os.path.join(workdir, "mosquitto.conf")
        self.log = os.path.join(workdir, "mosquitto.log")
        self.out = os.path.join(workdir, "mosquitto.out")
        self.proc = None
        self.exit_status = None

    def port(self, name):
        for lis in self.listeners:
            if lis.name == name:
                return lis.port
        raise KeyError(name)

    def config_text(self):
        lines = [f"# {self.comment}"]
        lines += [f"{k} {v}" for k, v in self.settings.items()]
        lines.append(f"log_dest file {self.log}")
        lines += [f"log_type {t}" for t in self.log_types]
        lines.append("log_timestamp_format %Y-%m-%dT%H:%M:%S")
        for lis in self.listeners:
            lines.append("")
            lines += lis.lines()
        return "\n".join(lines) + "\n"

    def describe(self):
        """Everything a result depends on: settings, listeners, the exact
        config file and the broker's version."""
        return {"software": "mosquitto", "version": version(),
                "settings": dict(self.settings),
                "log_types": list(self.log_types),
                "listeners": [lis.to_dict() for lis in self.listeners],
                "config": self.config_text()}

    def start(self, popen=subprocess.Popen, probe=None,
              timeout=READY_TIMEOUT_S):
        """Write the config, start the broker with popen(argv, stdout=,
        stderr=) and wait until probe(ports) says every listener accepts
        connections (default: connect on 127.0.0.1). BrokerError, with the
        broker's log, if it exits or stays deaf."""
        with open(self.conf, "w") as f:
            f.write(self.config_text())
        with open(self.out, "wb") as out:
            self.proc = popen(["mosquitto", "-c", self.conf], stdout=out,
                              stderr=subprocess.STDOUT)
        probe = probe or local_probe
        ports = [lis.port for lis in self.listeners]
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with status "
                                  f"{self.proc.returncode}: "
                                  f"{self.last_log_line()}")
            if probe(ports):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"mosquitto did not listen on "
                                  f"{ports} within {timeout:g} s: "
                                  f"{self.last_log_line()}")
            time.sleep(0.02)

    def read_log(self):
        text = ""
        for path in (self.log, self.out):
            try:
                with open(path, errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def last_log_line(self):
        lines = [l for l in self.read_log().splitlines() if l.strip()]
        return lines[-1] if lines else "(no log)"

    def resources(self):
        """CPU time (s) and peak RSS (KiB) of the running broker, from
        /proc (all Mininet hosts share the root pid namespace)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{pid}/status") as f:
                status = dict(l.split(":", 1) for l in f if ":" in l)
        except OSError:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        return {"cpu_user_s": int(fields[11]) / tick,
                "cpu_sys_s": int(fields[12]) / tick,
                "cpu_total_s": (int(fields[11]) + int(fields[12])) / tick,
                "max_rss_kib": int(status["VmHWM"].split()[0])}

    def read_sys(self, run=None, port=None, timeout=10.0):
        """The broker's $SYS counters after everything before this call:
        waits for the next $SYS update (uptime changes every
        sys_interval), then reads the retained value of each of SYS_TOPICS
        (the broker is single-threaded: a new subscriber is served after
        the update it was busy with). run(argv, timeout) runs a command
        where the broker is reachable on 127.0.0.1 (default: here).
        Returns {topic: number}; BrokerError if they cannot be read."""
        run = run or (lambda argv, timeout: subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout))
        port = port or next(l.port for l in self.listeners if not l.tls)
        base = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port),
                "-i", f"runner-sys-{os.getpid()}", "-W", str(int(timeout))]
        r = run(base + ["-t", "$SYS/broker/uptime", "-C", "2"],
                timeout=timeout + 5)
        if r.returncode != 0:
            raise BrokerError(f"cannot read $SYS/broker/uptime: "
                              f"{_text(r.stderr or r.stdout)[-200:]}")
        argv = base + ["-v", "-C", str(len(SYS_TOPICS))]
        for t in SYS_TOPICS:
            argv += ["-t", t]
        r = run(argv, timeout=timeout + 5)
        values = {}
        for line in _text(r.stdout).splitlines():
            topic, _, value = line.partition(" ")
            try:
                values[topic] = float(value) if "." in value else \
                    int(value)
            except ValueError:
                values[topic] = value
        if SYS_DROPPED not in values:
            raise BrokerError(f"the broker did not report {SYS_DROPPED} "
                              f"(mosquitto_sub status {r.returncode})")
        return values

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM and wait; SIGKILL only if it does not exit in time.
        Returns the exit status."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.exit_status = p.returncode
        return self.exit_status


def _text(b):
    if isinstance(b, bytes):
        return b.decode(errors="replace").strip()
    return (b or "").strip()


def dropped(sys_values):
    """Messages the broker dropped, from read_sys()'s result."""
    return int(sys_values.get(SYS_DROPPED, 0))


# ---- command line ------------------------------------------------------------

def _serve(args):
    settings = {}
    for kv in args.set:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            print(f"error: --set wants KEY=VALUE, got {kv!r}",
                  file=sys.stderr)
            return 2
        settings[k] = v
    b = Broker(args.dir, [Listener(args.tcp, bind=args.bind)],
               settings=settings, log_types=args.log_type or None,
               comment="written by runner/mosquitto.py serve")
    stop = []

    def on_signal(signum, frame):
        stop.append(signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        b.start(probe=lambda ports: local_probe(ports, args.bind or
                                                "127.0.0.1"))
    except (BrokerError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{b.proc.pid}\n")
    os.replace(tmp, args.ready_file)
    while not stop and b.proc.poll() is None:
        time.sleep(0.1)
    rc = b.stop()
    return 0 if rc in (0, -signal.SIGTERM) else (rc if rc and rc > 0
                                                   else 1)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python3 -m runner.mosquitto",
        description="Start the benchmark's Mosquitto with the project's "
        "settings (see the module's documentation).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run a broker until SIGTERM/SIGINT")
    s.add_argument("--dir", required=True, help="folder for config and log")
    s.add_argument("--tcp", type=int, required=True, help="TCP port")
    s.add_argument("--bind", help="listen address (default: all)")
    s.add_argument("--set", action="append", default=[],
                   metavar="KEY=VALUE", help="override a setting")
    s.add_argument("--log-type", action="append", metavar="TYPE",
                   help="log_type (repeat; default error, warning, notice)")
    s.add_argument("--ready-file", required=True,
                   help="written with the broker's pid once it listens")
    args = ap.parse_args(argv)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
