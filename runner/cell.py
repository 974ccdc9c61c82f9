"""One cell: one scenario (variant) x link profile x transport x
repetition, on a freshly built dumbbell.

In order, inside the topology:
  1. the run's congestion control (the dumbbell sets TCP's on every
     host's routes; QUIC's endpoints get --cc) and the TCP settings of
     every host namespace, recorded;
  2. Mosquitto on r1 (runner/mosquitto.py) with TCP and TLS listeners, and
     the transport's gateway if it has one (QUIC);
  3. with CAPTURE=1, tcpdump on the bottleneck's left end (with QLOG=1,
     every QUIC endpoint also writes a qlog file per connection);
  4. subscribers (sink), each until its ready file says it is subscribed;
  5. publishers (loadgen), started back to back ("released"): the
     processes a scenario repeats (wake cycles) start again a pause after
     the previous one ended; a publisher that only holds connections
     (idle) gets SIGTERM once all its connections are up;
  6. subscribers end by themselves: at their expected count (computed from
     the scenario) or after an idle time (drain); one still running after
     the drain is stopped with SIGTERM, and every process is waited for
     until it has written its JSON;
  7. the broker's $SYS counters (the cell fails if it dropped messages),
     its CPU and memory; then the broker and gateway stop;
then teardown, the link's counters, the figures of metrics.py, and
cell.json, written atomically with everything the numbers depend on.

A problem ends the cell as failed with one line in "error"; the logs of
its processes stay in its folder and the run goes on.
"""
import json
import os
import signal
import subprocess
import time
import tomllib
import traceback
from pathlib import Path

from topologies import backends, contention, procs, profiles, state
from topologies.dumbbell import (Terminated, TopologyError, dumbbell,
                                 host_ip)

from . import metrics, mosquitto, scenario as scn, transports as tr
from .meta import line_value
from .results import atomic_json, iso_now

CELL_SCHEMA = "mqb-cell/1"
POLL_S = 0.01
SINK_READY_S = 30.0
GATEWAY_READY_S = 15.0
STOP_WAIT_S = 90.0           # a process writes its JSON after SIGTERM
                             # (a sink drains first: up to its 60 s
                             # --drain-max)
SINK_DRAIN_EXTRA_S = 10.0    # beyond the scenario's drain, before SIGTERM
NETWORK_WAIT_S = 1800.0      # another run holds the test network
START_AT_OPTION = "--start-at"
START_AHEAD_NS = 300_000_000   # time to spawn every publisher before it
HWM_EVERY_S = 0.2
SYSCTL_PATTERN = (r"^net\.(ipv4\.(tcp_|ip_local_port_range)|"
                  r"core\.(rmem_|wmem_|default_qdisc|netdev_max_backlog))")


class CellFailure(Exception):
    """One line: why this cell failed. kind "not-built" marks a feature
    (transport, option) that does not exist yet, "error" anything else."""

    def __init__(self, message, kind="error"):
        super().__init__(message)
        self.kind = kind


class RunContext:
    """What every cell of a run shares."""

    def __init__(self, run_dir, bindir, certs, backend="auto",
                 capture=False, raw=False, qlog=False, cc=None,
                 log=print):
        self.run_dir = run_dir
        self.bindir = bindir
        self.certs = certs
        self.backend = backend
        self.capture = capture
        self.raw = raw
        self.qlog = qlog
        self.cc = cc         # None: the hosts' own (runs made before CCA=)
        self.log = log
        # the options each tool lists (a missing binary lists none)
        self.help = {t: scn.help_options(os.path.join(bindir, t))
                     for t in ("loadgen", "sink", tr.QUIC_GATEWAY.binary)}


def dump_toml(raw):
    """The few TOML shapes a profile uses: scalars, lists, one level of
    tables."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(str(v))
    lines, tables = [], []
    for k, v in raw.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {val(v)}")
    for k, v in tables:
        lines.append(f"\n[{k}]")
        lines += [f"{kk} = {val(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def cell_profile(name, overrides):
    """The profile `name` with the scenario's link overrides applied
    (loss-sweep sets the loss of a fixed rate and delay): a Profile and
    the TOML text it was parsed from."""
    base = profiles.load_profile(name)
    text = Path(base.path).read_text()
    if not overrides:
        return base, text
    raw = tomllib.loads(text)
    raw.update({k: str(v) for k, v in overrides.items()})
    text = dump_toml(raw)
    return profiles.parse_profile(
        text, f"{base.path} with the scenario's [link] overrides",
        name), text


def wait_for_network(log):
    """Wait while another run holds the test network's lock (the
    dumbbell would refuse to build); returns the seconds waited."""
    t0 = time.monotonic()
    said = False
    while True:
        lock = state.Lock()
        try:
            lock.acquire()
            lock.release()
            return time.monotonic() - t0
        except state.Busy as e:
            if not said:
                log(f"waiting: {e}")
                said = True
            if time.monotonic() - t0 > NETWORK_WAIT_S:
                raise CellFailure(f"{e} (waited {NETWORK_WAIT_S:g} s)")
            time.sleep(0.5)


def proc_stat_steal():
    """CPU time stolen by the hypervisor so far, in seconds (all CPUs)."""
    t = contention.cpu_times()
    return None if t is None else t["steal"] / os.sysconf("SC_CLK_TCK")


def read_hwm_kib(pid):
    """VmHWM of pid (peak RSS of its current program), or None."""
    v = line_value(f"/proc/{pid}/status", "VmHWM:")
    return int(v.split()[0]) if v else None


class HwmSampler:
    """Peak RSS of a process as the runner sees it: VmHWM read at most
    every HWM_EVERY_S while it runs. VmHWM only grows, so the last reading
    is the peak up to then; what the process allocates in its last
    moments may be missed. (The tools' own max_rss_kib comes from
    getrusage, which after fork+exec also counts the RSS of the process
    that forked: here the runner's Python, about 30 MB.)"""

    def __init__(self):
        self.kib = None
        self.t = 0.0

    def sample(self, pid, force=False):
        now = time.monotonic()
        if not force and now - self.t < HWM_EVERY_S:
            return
        self.t = now
        v = read_hwm_kib(pid)
        if v is not None:
            self.kib = max(self.kib or 0, v)


class Proc:
    """One client process (sink, loadgen) on a host of the dumbbell,
    output in files."""

    def __init__(self, name, kind, role, host, argv, cell_dir, env=None):
        self.name, self.kind, self.role, self.host = name, kind, role, host
        self.dir = cell_dir
        self.json = os.path.join(cell_dir, name + ".json")
        self.ready_path = os.path.join(cell_dir, name + ".ready")
        self.log = os.path.join(cell_dir, name + ".log")
        self.argv = argv + ["--json", self.json, "--ready-file",
                            self.ready_path]
        self.env = env
        self.p = None
        self.t_start = self.t_end = None
        self.stopped_by = None       # None: exited by itself; "SIGTERM"
        self.hwm = HwmSampler()

    def start(self, db):
        with open(self.log, "wb") as out:
            self.p = db.popen(self.host, self.argv, stdout=out,
                              stderr=subprocess.STDOUT, env=self.env)
        self.t_start = time.monotonic()
        return self

    def running(self):
        if self.p is None:
            return False
        if self.p.poll() is None:
            self.hwm.sample(self.p.pid)
            return True
        if self.t_end is None:
            self.t_end = time.monotonic()
        return False

    def ready(self):
        return os.path.exists(self.ready_path)

    def terminate(self):
        if self.running():
            self.hwm.sample(self.p.pid, force=True)
            self.stopped_by = "SIGTERM"
            self.p.send_signal(signal.SIGTERM)

    def wait(self, timeout=STOP_WAIT_S):
        """Wait for exit; SIGKILL only after `timeout` (the JSON is then
        lost, and the record says so)."""
        if self.p is None:
            return None
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            self.stopped_by = "SIGKILL"
        self.running()
        return self.p.returncode

    def last_line(self):
        try:
            with open(self.log, errors="replace") as f:
                lines = [l.strip() for l in f if l.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def doc(self):
        try:
            with open(self.json) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def record(self):
        rc = None if self.p is None else self.p.returncode
        return {"name": self.name, "kind": self.kind, "role": self.role,
                "host": self.host, "argv": self.argv,
                "json": os.path.basename(self.json),
                "log": os.path.basename(self.log),
                "exit_status": rc, "stopped_by": self.stopped_by,
                "peak_rss_kib": self.hwm.kib,
                "ran_s": (self.t_end - self.t_start)
                if self.t_end and self.t_start else None}


class CellRun:
    def __init__(self, cell, ctx):
        self.cell = cell
        self.ctx = ctx
        self.dir = os.path.join(ctx.run_dir, "cells", cell.id)
        self.procs = []
        self.emu_hwm = {}
        self.result = {"schema": CELL_SCHEMA, **cell.to_dict(),
                       "status": "running", "error": None,
                       "failure_kind": None,
                       "started": iso_now(), "ended": None,
                       "duration_s": None}

    def log(self, msg):
        self.ctx.log(f"  {self.cell.id}: {msg}")

    # ---- the whole cell -----------------------------------------------------

    def run(self):
        t0 = time.monotonic()
        os.makedirs(self.dir, exist_ok=True)
        try:
            self._run()
            self.result["status"] = "ok"
        except (KeyboardInterrupt, Terminated):
            self.result["status"] = "interrupted"
            self.result["error"] = "interrupted (Ctrl-C or a signal)"
            raise
        except (CellFailure, tr.TransportUnavailable, scn.ScenarioError,
                TopologyError, backends.BackendError,
                profiles.ProfileError, mosquitto.BrokerError) as e:
            self.result["status"] = "failed"
            self.result["error"] = str(e) or type(e).__name__
            self.result["failure_kind"] = "not-built" if isinstance(
                e, tr.TransportUnavailable) else getattr(e, "kind", "error")
        except Exception as e:      # a bug: recorded, and the run goes on
            self.result["status"] = "failed"
            self.result["error"] = f"internal error: {e!r}"
            self.result["failure_kind"] = "error"
            with open(os.path.join(self.dir, "traceback.txt"), "w") as f:
                f.write(traceback.format_exc())
        finally:
            self.result["processes"] = [p.record() for p in self.procs]
            self.result["ended"] = iso_now()
            self.result["duration_s"] = round(time.monotonic() - t0, 3)
            try:
                self._metrics()
            except Exception as e:     # a runner bug: the data stay, and
                self.result["metrics"] = None     # make figures retries
                self.result["metrics_error"] = repr(e)
            if self.result["status"] == "ok" and \
                    self.result.get("broker", {}).get("dropped"):
                self.result["status"] = "failed"
                self.result["failure_kind"] = "error"
                self.result["error"] = (
                    f"the broker dropped "
                    f"{self.result['broker']['dropped']} messages "
                    f"($SYS/broker/publish/messages/dropped): its queue "
                    f"limits, not the network")
            atomic_json(os.path.join(self.dir, "cell.json"), self.result)
        return self.result

    def _run(self):
        cell, ctx = self.cell, self.ctx
        base = scn.load(cell.source or cell.scenario)
        sc = base.apply(dict(cell.values))
        self.sc = sc
        self.transport = tr.get(cell.transport)
        self.result["scenario_file"] = {"path": sc.path, "text": base.text}
        self.result["transport_info"] = self.transport.to_dict()
        self.transport.check(ctx.bindir)
        prof, prof_text = cell_profile(cell.profile, sc.link)
        self.result["profile_file"] = prof_text
        self.pubs = [r for r in sc.publishers
                     if r.applies_to(cell.transport)]
        self.subs = [r for r in sc.subscribers
                     if r.applies_to(cell.transport)]
        self._plan()
        waited = wait_for_network(self.log)
        self.result["waited_for_network_s"] = round(waited, 3)
        steal0 = proc_stat_steal()
        load0 = os.getloadavg()
        db = None
        try:
            with dumbbell(prof, backend=ctx.backend, hosts=sc.hosts,
                          seed=cell.seed, log=self.log,
                          lock_timeout=NETWORK_WAIT_S,
                          congestion_control=ctx.cc) as db:
                self.db = db
                self.result["topology"] = db.describe()
                self.result["congestion_control"] = self._cc_record(db)
                self.result["hosts_tcp"] = self._tcp_settings(db)
                self._inside(db)
                db.check()
        finally:
            if db is not None:
                self.result["link"] = metrics.normalize_link(db.link_stats)
                for label, h in self.emu_hwm.items():
                    lk = (self.result["link"] or {}).get("links", {}) \
                        .get(label)
                    if lk and lk.get("emulator"):
                        lk["emulator"]["peak_rss_kib"] = h.kib
                self.result["link_raw"] = db.link_stats
                self.result["teardown_problems"] = list(db.problems)
            steal1 = proc_stat_steal()
            self.result["contention"] = {
                "steal_s": None if steal0 is None or steal1 is None
                else round(steal1 - steal0, 3),
                "loadavg_before": list(load0),
                "loadavg_after": list(os.getloadavg()),
                "cpus": os.cpu_count(),
                # the dumbbell's own record: CPU busy share and steal around
                # the link's life, each emulator's timing error, and
                # whether an emulator ran late (topologies/contention.py)
                "link": None if db is None else
                (db.link_stats or {}).get("contention")}
        if db is not None and db.problems:
            raise CellFailure("teardown: " + "; ".join(db.problems))

    # ---- what runs ----------------------------------------------------------

    def _client_env(self, name):
        if not (self.ctx.capture and self.transport.secure):
            return None
        return dict(os.environ, SSLKEYLOGFILE=os.path.join(
            self.dir, f"keylog-{name}.txt"))

    def _qlog_args(self, name):
        """--qlog-dir for a QUIC endpoint with QLOG=1: qlog/<name>/ in
        the cell's folder, one file per connection."""
        if not (self.ctx.qlog and self.transport.name == "quic"):
            return []
        d = os.path.join(self.dir, "qlog", name)
        os.makedirs(d, exist_ok=True)
        return ["--qlog-dir", d]

    def _qlog_record(self):
        """What QLOG=1 left: each endpoint's qlog files (cell-relative)."""
        top = os.path.join(self.dir, "qlog")
        if not os.path.isdir(top):
            return
        self.result["qlog"] = {
            "dir": "qlog",
            "format": "JSON-SEQ (RFC 7464), ngtcp2's qlog, one file per "
                      "QUIC connection per endpoint",
            "files": {n: sorted(f"qlog/{n}/{f}" for f in
                                os.listdir(os.path.join(top, n)))
                      for n in sorted(os.listdir(top))}}

    def _plan(self):
        """Every process's command line, checked against the options the
        binaries offer, before anything is built."""
        cell, ctx, sc = self.cell, self.ctx, self.sc
        broker_ip = host_ip(scn.BROKER_HOST)
        conn = ["--host", broker_ip] + \
            self.transport.client_args(ctx.certs) + self._quic_cc_args()
        self.sink_plans, self.pub_plans = [], []
        for r in self.subs:
            exp = scn.expected_messages(r, self.pubs, cell.transport)
            args = scn.subscriber_args(
                r, exp, "--expect" if "--expect" in ctx.help["sink"]
                else "--count")
            if exp is None:
                args += ["--idle-timeout", scn.fmt_duration(sc.drain_s)]
            if r.f["raw"] or ctx.raw:
                args += ["--raw", os.path.join(self.dir, r.name + ".raw")]
            argv = [os.path.join(ctx.bindir, "sink")] + conn + args + \
                ["--client-id", f"sink-{r.name}"] + self._qlog_args(r.name)
            self._check(argv, "sink")
            self.sink_plans.append((r, argv, exp))
        idb = 1
        for i, r in enumerate(self.pubs):
            plans = []
            for k in range(r.processes()):
                name = r.name if r.processes() == 1 else f"{r.name}-c{k:03d}"
                cid = name
                argv = [os.path.join(ctx.bindir, "loadgen")] + conn + \
                    scn.publisher_args(r) + \
                    ["--client-id", cid, "--id-base", str(idb << 16),
                     "--seed", str(cell.seed * 1000 + idb)] + \
                    self._qlog_args(name)
                idb += 1
                plans.append((name, argv))
            self._check(plans[0][1], "loadgen")
            self.pub_plans.append((r, plans))
        self.result["plan"] = {
            "broker_host": scn.BROKER_HOST, "broker_ip": broker_ip,
            "sinks": [{"role": r.name, "host": r.host, "expected": e}
                      for r, _, e in self.sink_plans],
            "publishers": [{"role": r.name, "host": r.host,
                            "processes": len(p),
                            "clients": r.f["clients"],
                            "qos": r.f["qos"], "size": r.f["size"]}
                           for r, p in self.pub_plans],
            "drain_s": sc.drain_s}

    def _check(self, argv, tool):
        line = scn.check_options(argv, self.ctx.help[tool], tool)
        if line:
            raise CellFailure(line, kind="not-built")

    def _quic_cc_args(self):
        if self.ctx.cc and self.transport.name == "quic":
            return ["--cc", self.ctx.cc]
        return []

    def _cc_record(self, db):
        """The run's congestion control: TCP's set by the dumbbell on
        every host's routes, QUIC's given to its endpoints as --cc."""
        cc = self.ctx.cc
        return None if not cc else {
            "name": cc,
            "tcp": f"congctl {cc} on every route of every host namespace "
                   f"(the namespaces' default, in hosts_tcp, is not used "
                   f"for these routes)",
            "quic": f"--cc {cc} at loadgen, sink and the gateway"
                    if self.transport.name == "quic" else None,
            "routes": db.cc_routes}

    def _tcp_settings(self, db):
        """net.ipv4.tcp_* and core buffer settings of every host, grouped
        by identical sets."""
        sets = []
        for h in db.left + db.right:
            r = db.run(h, ["sysctl", "-a", "--pattern", SYSCTL_PATTERN],
                       timeout=20)
            vals = {}
            for line in r.stdout.decode(errors="replace").splitlines():
                k, sep, v = line.partition(" = ")
                if sep:
                    vals[k.strip()] = v.strip()
            for s in sets:
                if s["settings"] == vals:
                    s["hosts"].append(h)
                    break
            else:
                sets.append({"hosts": [h], "settings": vals})
        return sets

    def _inside(self, db):
        cell, ctx = self.cell, self.ctx
        bdir = os.path.join(self.dir, "broker")
        settings = dict(self.sc.broker)
        broker = mosquitto.Broker(bdir, [
            mosquitto.Listener(tr.BROKER_PORTS["tcp"]),
            mosquitto.Listener(tr.BROKER_PORTS["tls"],
                               certfile=ctx.certs["broker"],
                               keyfile=ctx.certs["broker_key"])],
            settings=settings,
            comment=f"written by runner/cell.py for {cell.id}")
        self.result["broker"] = broker.describe()

        broker.start(popen=lambda argv, **kw: db.popen(
            scn.BROKER_HOST, argv, **kw), probe=mosquitto.namespace_probe(
                lambda argv: db.run(scn.BROKER_HOST, argv, timeout=10)))
        gateway = capture = None
        try:
            if self.transport.gateway:
                gateway = self._start_gateway(db)
            capture = self._start_capture() if ctx.capture else None
            self._clients(db)
            try:
                sysv = broker.read_sys(
                    run=lambda argv, timeout: db.run(
                        scn.BROKER_HOST, argv, timeout=timeout),
                    port=tr.BROKER_PORTS["tcp"])
                self.result["broker"]["sys"] = sysv
                self.result["broker"]["dropped"] = mosquitto.dropped(sysv)
            except mosquitto.BrokerError as e:
                raise CellFailure(str(e))
            self.result["broker"]["resources"] = broker.resources()
        finally:
            if gateway:
                gateway.terminate()
                gateway.wait()
                self.result["gateway"] = {"record": gateway.record(),
                                          "stats": gateway.doc()}
            self._qlog_record()
            rc = broker.stop()
            self.result["broker"]["exit_status"] = rc
            self.result["broker"]["log"] = "broker/mosquitto.log"
            # after the broker: the last FIN and ACK are on the link too
            if capture:
                self._stop_capture(capture)
        if rc not in (0, -signal.SIGTERM):
            raise CellFailure(f"mosquitto exited with status {rc}: "
                              f"{broker.last_log_line()}")

    def _start_gateway(self, db):
        g = self.transport.gateway
        name = "gateway"
        p = Proc(name, "gateway", name, scn.BROKER_HOST, [], self.dir)
        p.argv = g.argv(self.ctx.bindir, self.transport.port,
                        tr.BROKER_PORTS["tcp"], self.ctx.certs, p.json,
                        p.ready_path) + self._qlog_args(name) + \
            self._quic_cc_args()
        self._check(p.argv, g.binary)
        self.procs.append(p)
        p.start(db)
        self._wait_ready([p], GATEWAY_READY_S)
        return p

    def _start_capture(self):
        topo = self.result["topology"]
        iface = next((s["interface"] for s in topo["shaped"]
                      if s["link"] == "bottleneck" and
                      s["direction"] == "left_to_right"), None)
        if iface is None:
            raise CellFailure("CAPTURE=1: this profile shapes no "
                              "bottleneck to capture on")
        pcap = os.path.join(self.dir, "capture.pcap")
        log = os.path.join(self.dir, "tcpdump.log")
        # --immediate-mode: every frame is handed over as it comes, so
        # none waits in a ring block when SIGINT ends the capture
        argv = ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode",
                "-Z", "root", "-s", "0", "-w", pcap]
        with open(log, "wb") as out:
            try:
                p = subprocess.Popen(argv, stdout=out,
                                     stderr=subprocess.STDOUT,
                                     preexec_fn=procs.die_with_parent())
            except FileNotFoundError:
                raise CellFailure("CAPTURE=1 needs tcpdump (make deps)")
        deadline = time.monotonic() + 10
        while True:
            with open(log, errors="replace") as f:
                if "listening on" in f.read():
                    break
            if p.poll() is not None or time.monotonic() > deadline:
                p.kill()
                raise CellFailure(f"tcpdump did not start on {iface}")
            time.sleep(POLL_S)
        self.result["capture"] = {
            "file": "capture.pcap", "interface": iface, "argv": argv,
            "where": "the bottleneck's left end: frames from the left hosts "
                     "as they enter the link (before its loss, userspace "
                     "backend; after it, netem) and frames from the right "
                     "as they leave it",
            "keylog": "keylog.txt" if self.transport.secure else None}
        return p

    def _stop_capture(self, p):
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        # One key log for the cell, beside the capture.
        logs = sorted(Path(self.dir).glob("keylog-*.txt"))
        if logs:
            with open(os.path.join(self.dir, "keylog.txt"), "w") as out:
                for path in logs:
                    out.write(path.read_text())
                    path.unlink()

    def _wait_ready(self, ps, timeout):
        deadline = time.monotonic() + timeout
        waiting = list(ps)
        while waiting:
            for p in list(waiting):
                if p.ready():
                    waiting.remove(p)
                elif not p.running():
                    raise CellFailure(f"{p.name} on {p.host} exited with "
                                      f"status {p.p.returncode} before it "
                                      f"was ready: {p.last_line()}")
            if waiting and time.monotonic() > deadline:
                raise CellFailure(f"{', '.join(p.name for p in waiting)} "
                                  f"not ready after {timeout:g} s")
            if waiting:
                time.sleep(POLL_S)

    def _clients(self, db):
        sinks = []
        for r, argv, exp in self.sink_plans:
            p = Proc(r.name, "sink", r.name, r.host, argv, self.dir,
                     self._client_env(r.name))
            self.procs.append(p)
            sinks.append(p.start(db))
        try:
            self._wait_ready(sinks, SINK_READY_S)
            self._publish(db)
            self._drain(sinks)
        finally:
            for p in self.procs:
                p.terminate()
            for p in self.procs:
                p.wait()
        bad = [p for p in self.procs
               if p.p is not None and p.p.returncode != 0 and
               not (p.stopped_by == "SIGTERM" and p.p.returncode == 0)]
        if bad:
            p = bad[0]
            raise CellFailure(f"{p.name} on {p.host} exited with status "
                              f"{p.p.returncode}: {p.last_line()}")
        nojson = [p for p in self.procs if p.doc() is None]
        if nojson:
            raise CellFailure(f"{nojson[0].name} wrote no JSON "
                              f"({nojson[0].stopped_by or 'exited'})")

    def _publish(self, db):
        """Start every publisher, then follow them until all are done."""
        start_at = None
        if START_AT_OPTION in self.ctx.help["loadgen"]:
            # every publisher sets up, then waits for this instant
            start_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + \
                START_AHEAD_NS
        states = []
        t_release = time.monotonic()
        for r, plans in self.pub_plans:
            st = {"role": r, "plans": plans, "k": 0, "proc": None,
                  "due": t_release, "done": False, "signalled": False,
                  "deadline": t_release + scn.role_deadline_s(r) +
                  r.processes() * (r.f["pause"] + 30.0)}
            states.append(st)
        spawn = []
        for st in states:
            self._next_cycle(db, st, start_at)
            spawn.append(st["proc"].t_start)
        self.result["release"] = {
            "method": (f"released together: loadgen {START_AT_OPTION} "
                       f"{start_at} (CLOCK_MONOTONIC ns, "
                       f"{START_AHEAD_NS / 1e6:g} ms after the first "
                       f"spawn)" if start_at else
                       "started back to back (loadgen has no "
                       f"{START_AT_OPTION})"),
            "start_at_ns": start_at,
            "spread_ms": round((max(spawn) - min(spawn)) * 1000, 3)
            if spawn else 0}
        while not all(st["done"] for st in states):
            now = time.monotonic()
            for st in states:
                if st["done"]:
                    continue
                p, r = st["proc"], st["role"]
                if p is None:
                    if now >= st["due"]:
                        self._next_cycle(db, st, None)
                    continue
                if p.running():
                    if r.f["idle"] and p.ready() and not st["signalled"]:
                        st.setdefault("ready_at", now)
                        if now - st["ready_at"] >= r.f["hold"]:
                            p.terminate()
                            st["signalled"] = True
                    if now > st["deadline"]:
                        p.terminate()
                        raise CellFailure(
                            f"{p.name} on {p.host} still running after "
                            f"{now - st['proc'].t_start:.0f} s (hung?): "
                            f"{p.last_line()}")
                    continue
                if p.p.returncode != 0:
                    raise CellFailure(f"{p.name} on {p.host} exited with "
                                      f"status {p.p.returncode}: "
                                      f"{p.last_line()}")
                st["k"] += 1
                st["proc"] = None
                st["signalled"] = False
                st.pop("ready_at", None)
                if st["k"] >= len(st["plans"]):
                    st["done"] = True
                else:
                    st["due"] = now + r.f["pause"]
            self._tick()
            time.sleep(POLL_S)

    def _tick(self):
        """Between polls: peak-memory samples of every process running,
        the link emulators included."""
        for p in self.procs:
            p.running()
        for label, lk in self.db.linkems.items():
            if lk.proc is not None and lk.proc.poll() is None:
                self.emu_hwm.setdefault(label, HwmSampler()).sample(
                    lk.proc.pid)

    def _next_cycle(self, db, st, start_at):
        name, argv = st["plans"][st["k"]]
        argv = list(argv)
        if start_at is not None:
            argv += [START_AT_OPTION, str(start_at)]
        p = Proc(name, "publisher", st["role"].name, st["role"].host, argv,
                 self.dir, self._client_env(name))
        self.procs.append(p)
        st["proc"] = p.start(db)

    def _drain(self, sinks):
        """Subscribers stop by themselves (count, or idle time); after the
        drain plus a margin, SIGTERM: what they have is written."""
        deadline = time.monotonic() + max(self.sc.drain_s, 2.0) + \
            SINK_DRAIN_EXTRA_S
        while any([p.running() for p in sinks]):
            self._tick()
            if time.monotonic() > deadline:
                for p in sinks:
                    if p.running():
                        self.log(f"{p.name} had not received everything "
                                 f"after the drain; stopping it")
                        p.terminate()
                break
            time.sleep(POLL_S)

    # ---- figures of this cell ---------------------------------------------------

    def _metrics(self):
        self.result["metrics"] = compute(self.dir, self.result)


def load_docs(cell_dir, result):
    """Each process record of a finished cell with its JSON document
    ({} where it is missing or unreadable), each file read once."""
    out = []
    for rec in result.get("processes") or []:
        try:
            with open(os.path.join(cell_dir, rec["json"])) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            doc = {}
        out.append((rec, doc))
    return out


def _usage(docs, kind):
    """CPU time from each process's own JSON, peak RSS as the runner
    sampled it (HwmSampler says why not the tools' own figure)."""
    return [{"cpu_total_s": (doc.get("resources") or {}).get("cpu_total_s"),
             "max_rss_kib": rec.get("peak_rss_kib")}
            for rec, doc in docs if rec.get("kind") == kind]


def compute(cell_dir, result):
    """The cell's figures (metrics.py) from its folder's JSON alone."""
    docs = load_docs(cell_dir, result)
    lg = [d for rec, d in docs if rec["kind"] == "publisher" and d]
    sinks = [d for rec, d in docs if rec["kind"] == "sink" and d]
    msgs = sum((d.get("totals") or {}).get("messages_sent", 0) for d in lg)
    # connections made: a client that cycles (--cycles) made one a cycle
    conns = sum((d["cycles"].get("done", 0) if d.get("cycles") else
                 (d.get("totals") or {}).get("connected", 0)) for d in lg)
    payload = sum((d.get("totals") or {}).get("payload_bytes_sent", 0)
                  for d in lg)
    link = result.get("link")
    emu = ((link or {}).get("links", {}).get("bottleneck") or {}) \
        .get("emulator")
    res = metrics.resources({
        "loadgen": _usage(docs, "publisher"),
        "sink": _usage(docs, "sink"),
        "broker": [(result.get("broker") or {}).get("resources")],
        "gateway": _usage(docs, "gateway"),
        "linkem": [{"cpu_total_s": emu.get("cpu_s"),
                    "max_rss_kib": emu.get("peak_rss_kib")}] if emu else []})
    m = {"connect": metrics.connect(lg),
         "latency": metrics.latency(sinks),
         "delivery": metrics.delivery(lg, sinks, scn.topic_matches),
         "wire": metrics.wire(link, msgs, conns, payload),
         "goodput_bps": metrics.goodput(sinks),
         "resources": res,
         "schedule": metrics.schedule(lg),
         "messages_sent": msgs, "payload_bytes_sent": payload}
    recs = []
    for rec in result.get("processes") or []:
        raw = os.path.join(cell_dir, rec["name"] + ".raw")
        if rec.get("kind") == "sink" and os.path.exists(raw):
            flows = metrics.read_raw(raw)
            recs.append(flows)
            h = metrics.hol(flows)
            if h:
                m.setdefault("flows", {})[rec["name"]] = h
    mig = metrics.migration(lg, recs)
    if mig:
        m["migration"] = mig
    cyc = metrics.cycles(lg)
    if cyc:
        m["cycles"] = cyc
        w = m["wire"] or {}
        n = cyc["cycles"]
        if w.get("bytes") is not None and n:
            cyc["bytes_per_cycle"] = w["bytes"] / n
            cyc["frames_per_cycle"] = w["frames"] / n
    return m
