"""The benchmark's dumbbell: N hosts per side, two switches, one bottleneck.

    l1 ─┐                                          ┌─ r1
    l2 ─┼─ mqbs1 ══ bottleneck (profile) ══ mqbs2 ─┼─ r2
    lN ─┘                                          └─ rN
    left hosts 10.0.1.i/16                right hosts 10.0.2.i/16

Switches are Linux bridges (no controller, no Open vSwitch needed); Open
vSwitch bridges where installed (--switch ovs). The link profile shapes
the bottleneck and, if the profile says so, every access link; each
direction is shaped once, so a 10 ms profile gives 20 ms of RTT plus
serialisation. Left to right is the profile's left_to_right direction.

As a library:

    from topologies.dumbbell import dumbbell
    with dumbbell("3g", backend="auto", hosts=2) as db:
        srv = db.popen("r1", ["iperf3", "-s", "-1"])
        out = db.cmd("l1", "ping -c 3 " + db.ip("r1"))
    db.link_stats     # linkem's or tc's counters, after the block

The block always tears down, whatever ends it (exception, Ctrl-C,
SIGTERM): processes on the hosts, linkem, the host namespaces, bridges,
veths, TAP devices, and the kernel settings it changed. What a run
creates is recorded first in /run/mqb/<pid>.json, so a run killed with
SIGKILL is cleaned by `python3 -m topologies.cleanup` (make clean-net),
and automatically by the next run.

Every name the project creates in the root namespace starts with "mqb":
switches mqbs1, mqbs2; their ports mqbs1-l1, mqbs2-r1, mqbs1-bn, mqbs2-bn;
bottleneck TAPs mqbbn-a, mqbbn-b; for userspace-shaped access links a
bridge mqbx-l1 and TAPs mqbl1-a, mqbl1-b.

From the command line (as root, system Python):

    /usr/bin/python3 -m topologies.dumbbell --profile 3g --hosts 2 \\
        --cmd l1 'ping -c 5 $R1'          # host IPs are in $L1.. $R1..
    /usr/bin/python3 -m topologies.dumbbell --profile wifi --cli
"""
import argparse
import contextlib
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import threading

from . import backends, cleanup, procs, profiles, state

S1, S2 = "mqbs1", "mqbs2"
BN_PORTS = ("mqbs1-bn", "mqbs2-bn")
BN_TAPS = ("mqbbn-a", "mqbbn-b")
MAX_HOSTS = 99
OFFLOADS = ["tso", "off", "gso", "off", "gro", "off"]
BRIDGE_NF = ("arptables", "iptables", "ip6tables")
SWITCH_KINDS = ("linuxbridge", "ovs")



class TopologyError(Exception):
    """One-line description of why the topology cannot be built."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; unwinds like KeyboardInterrupt so the
    topology is torn down. BaseException, so `except Exception` in a
    runner does not swallow it."""

    def __init__(self, signum):
        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")


def host_ip(name):
    side, i = name[0], int(name[1:])
    return f"10.0.{1 if side == 'l' else 2}.{i}"


def host_mac(name):
    side, i = name[0], int(name[1:])
    return f"02:00:00:00:{1 if side == 'l' else 2:02x}:{i:02x}"


def _run(argv, check=True):
    """Run a command in the root namespace; raise TopologyError on failure
    with its last line of stderr."""
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise TopologyError(f"`{shlex.join(argv)}` failed: "
                            f"{msg[-1] if msg else r.returncode}")
    return r


def _iface_exists(name):
    return os.path.exists(f"/sys/class/net/{name}")


def _ovs_problem():
    """Why Open vSwitch cannot be used here, or None."""
    if not os.path.isdir("/sys/module/openvswitch"):
        return "its kernel module (openvswitch) is not loaded"
    try:
        r = subprocess.run(["ovs-vsctl", "--timeout=3", "show"],
                           capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "ovs-vsctl is missing or does not answer"
    if r.returncode != 0:
        return "ovsdb-server / ovs-vswitchd are not running"
    return None


class Dumbbell:
    """A built dumbbell; made by the dumbbell() context manager."""

    def __init__(self, profile, backend="auto", hosts=5,
                 switch="linuxbridge", seed=1, log=None,
                 linkem_rt_priority=backends.LINKEM_RT_PRIORITY):
        self.profile = profiles.load_profile(profile)
        self.requested_backend = backend
        if not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
            raise TopologyError(f"--hosts must be between 1 and "
                                f"{MAX_HOSTS}, got {hosts}")
        if switch not in SWITCH_KINDS:
            raise TopologyError(f"unknown switch {switch!r}; use "
                                f"linuxbridge or ovs")
        self.n = hosts
        self.switch_kind = switch
        self.seed = seed
        self.linkem_rt_priority = linkem_rt_priority
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.backend = None
        self.backend_note = None
        self.net = None
        self.left = [f"l{i}" for i in range(1, hosts + 1)]
        self.right = [f"r{i}" for i in range(1, hosts + 1)]
        self.linkems = {}
        self.shaped = []     # (label, direction name, dev, host or None)
        self.link_stats = None
        self.problems = []
        self.linkem_bin = None
        self._lock = None
        self._state = None
        self._procs = []
        self._hostinfo = {}

    # ---- what a runner uses ---------------------------------------------

    def host(self, name):
        """The Mininet host object of l1..lN, r1..rN."""
        if name not in self._hostinfo:
            raise TopologyError(f"no host {name!r} (hosts: "
                                f"{', '.join(self.left + self.right)})")
        return self.net.get(name)

    def ip(self, name):
        self.host(name)
        return host_ip(name)

    def hosts_env(self):
        """{"L1": "10.0.1.1", ..., "R1": "10.0.2.1", ...}"""
        return {h.upper(): host_ip(h) for h in self.left + self.right}

    def popen(self, name, argv, **kwargs):
        """Start argv on host `name` (a subprocess.Popen). The process is
        recorded, dies with this process, and is stopped at teardown."""
        h = self.host(name)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        theirs = kwargs.pop("preexec_fn", None)
        ours = procs.die_with_parent()

        def preexec():
            ours()
            if theirs:
                theirs()
        p = h.popen(list(argv), preexec_fn=preexec, **kwargs)
        self._procs.append((p, procs.starttime(p.pid)))
        self._state.add_process(p.pid, f"{name}: {argv[0]}")
        return p

    def run(self, name, argv, timeout=None, **kwargs):
        """Run argv on host `name` to completion: CompletedProcess."""
        p = self.popen(name, argv, **kwargs)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise TopologyError(f"`{shlex.join(argv)}` on {name} took "
                                f"longer than {timeout:g} s") from None
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    def cmd(self, name, command):
        """Run a shell command line in host `name`'s Mininet shell."""
        return self.host(name).cmd(command)

    def check(self):
        """Raise BackendError if a link emulator has died."""
        for lk in self.linkems.values():
            lk.check()

    def describe(self):
        """What this topology is, for a run's metadata."""
        return {
            "topology": "dumbbell", "hosts_per_side": self.n,
            "hosts": {h: host_ip(h) for h in self.left + self.right},
            "switch": self.switch_kind, "switches": [S1, S2],
            "backend": self.backend, "backend_note": self.backend_note,
            "seed": self.seed, "profile": self.profile.to_dict(),
            "shaped": [{"link": lab, "direction": d, "interface": dev,
                        "namespace": h or "root"}
                       for lab, d, dev, h in self.shaped],
            "linkem": ({"binary": self.linkem_bin,
                        "version": backends.linkem_version(self.linkem_bin),
                        "scheduling": {lab: lk.scheduling for lab, lk in
                                       self.linkems.items()}}
                       if self.linkem_bin else None),
            "kernel": os.uname().release,
            "mininet": _mininet_version(),
        }

    # ---- building --------------------------------------------------------

    def build(self):
        if os.geteuid() != 0:
            raise TopologyError("must run as root (Mininet creates "
                                "namespaces, bridges and veths)")
        self.backend, self.backend_note = \
            backends.choose_backend(self.requested_backend)
        if self.backend == "userspace":
            self.linkem_bin = backends.find_linkem()
        if self.switch_kind == "ovs":
            why = _ovs_problem()
            if why:
                raise TopologyError(f"Open vSwitch is not usable here: "
                                    f"{why}; use --switch linuxbridge")
        from mininet.net import Mininet
        from mininet.link import Link
        from mininet.node import OVSBridge
        from mininet.nodelib import LinuxBridge

        self._lock = state.Lock()
        try:
            self._lock.acquire()
        except state.Busy as e:
            self._lock = None
            raise TopologyError(str(e)) from None
        cleanup.clean_stale(log=self.log)
        self._state = state.RunState(argv=sys.argv)
        self._bridge_nf_off()

        access = "access" in self.profile.applies
        bottleneck = "bottleneck" in self.profile.applies
        userspace = self.backend == "userspace"
        # Recorded before they exist (state.py); ports before bridges, the
        # order cleanup deletes them in.
        names = [f"{S1}-{h}" for h in self.left] + \
            [f"{S2}-{h}" for h in self.right]
        bridges = [S1, S2]
        if not (userspace and bottleneck):
            names += BN_PORTS
        if userspace and bottleneck:
            names += BN_TAPS
        if userspace and access:
            for h in self.left + self.right:
                names += [f"mqb{h}-a", f"mqb{h}-b"]
                bridges.append(f"mqbx-{h}")
        self._state.data["switch"] = self.switch_kind
        self._state.add_interfaces(names)
        self._state.add_interfaces(bridges, bridge=True)

        # Mininet.init() would raise system-wide limits (fixLimits: sysctls
        # it never restores); the few we need are per process.
        Mininet.inited = True
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 16384 if hard == resource.RLIM_INFINITY else min(16384, hard)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

        sw = OVSBridge if self.switch_kind == "ovs" else LinuxBridge
        net = Mininet(topo=None, build=False, controller=None, switch=sw,
                      link=Link, ipBase="10.0.0.0/16", autoStaticArp=True)
        self.net = net
        for s in (S1, S2):
            node = net.addSwitch(s)
            self._state.add_process(node.pid, f"switch shell {s}")
        for h in self.left + self.right:
            node = net.addHost(h, ip=host_ip(h) + "/16", mac=host_mac(h))
            self._hostinfo[h] = node
            self._state.add_host(h, node.pid, [f"{h}-eth0"])
        for h in self.left:
            net.addLink(h, S1, intfName1=f"{h}-eth0", intfName2=f"{S1}-{h}")
        for h in self.right:
            net.addLink(h, S2, intfName1=f"{h}-eth0", intfName2=f"{S2}-{h}")
        if not (userspace and bottleneck):
            net.addLink(S1, S2, intfName1=BN_PORTS[0],
                        intfName2=BN_PORTS[1])
        net.build()    # addresses, static ARP (no ARP over lossy links)
        net.start()    # bridges up, ports attached

        for h in self.left + self.right:
            # IPv6 would add router solicitations and MLD reports to the
            # measured links; the benchmark is IPv4.
            self._in_host(h, ["sysctl", "-q", "-w",
                              "net.ipv6.conf.all.disable_ipv6=1"])
            self._in_host(h, ["ethtool", "-K", f"{h}-eth0"] + OFFLOADS)
        for name in (S1, S2):
            self._quiet_iface(name, offloads=False)
        for name in names:
            if _iface_exists(name):       # the rest is made below
                self._quiet_iface(name)

        if self.backend == "netem":
            self._shape_netem(bottleneck, access)
        else:
            self._shape_userspace(bottleneck, access)

    def _in_host(self, name, argv, check=True):
        """Run argv in host `name`'s namespace, without its shell (which a
        runner may have left busy)."""
        pid = self._hostinfo[name].pid
        return _run(["mnexec", "-a", str(pid)] + argv, check=check)

    def _quiet_iface(self, name, offloads=True):
        """Offloads off and IPv6 off on a root-namespace interface."""
        if offloads:
            _run(["ethtool", "-K", name] + OFFLOADS)
        try:
            with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6",
                      "w") as f:
                f.write("1")
        except OSError:
            pass

    def _bridge_nf_off(self):
        """Bridged frames must not go through iptables (Mininet warns about
        it); turned off for the run, restored at teardown."""
        for table in BRIDGE_NF:
            key = f"net.bridge.bridge-nf-call-{table}"
            path = "/proc/sys/" + key.replace(".", "/")
            try:
                with open(path) as f:
                    old = f.read().strip()
            except OSError:
                continue
            if old != "0":
                self._state.add_sysctl(key, old, "0")
                with open(path, "w") as f:
                    f.write("0")

    def _access_links(self):
        """(label, l2r dev, l2r host, r2l dev, r2l host) per access link:
        each direction is shaped where its frames leave."""
        out = []
        for h in self.left:
            out.append((f"access-{h}", f"{h}-eth0", h, f"{S1}-{h}", None))
        for h in self.right:
            out.append((f"access-{h}", f"{S2}-{h}", None, f"{h}-eth0", h))
        return out

    def _shape_netem(self, bottleneck, access):
        links = []
        if bottleneck:
            links.append(("bottleneck", BN_PORTS[0], None, BN_PORTS[1],
                          None))
        if access:
            links += self._access_links()
        p = self.profile
        for label, dev1, h1, dev2, h2 in links:
            for dname, dev, h in (("left_to_right", dev1, h1),
                                  ("right_to_left", dev2, h2)):
                for argv in backends.netem_commands(dev, p.direction(dname)):
                    r = self._in_host(h, argv, check=False) if h else \
                        _run(argv, check=False)
                    if r.returncode != 0:
                        err = (r.stderr or "").strip().splitlines()
                        if any("qdisc kind is unknown" in e for e in err):
                            raise backends.BackendError(backends.NO_NETEM)
                        raise backends.BackendError(
                            f"tc failed on {dev}: "
                            f"{err[-1] if err else r.returncode}")
                self.shaped.append((label, dname, dev, h))

    def _start_linkem(self, label, tap_a, tap_b):
        p = self.profile
        rd = self._state.run_dir
        lk = backends.Linkem(
            self.linkem_bin, tap_a, tap_b, p.left_to_right, p.right_to_left,
            os.path.join(rd, f"linkem-{label}.json"), self.seed,
            os.path.join(rd, f"linkem-{label}.log"), label,
            rt_priority=self.linkem_rt_priority)
        self.linkems[label] = lk
        pid = lk.start()
        self._state.add_process(pid, f"linkem {label}")
        if self.linkem_rt_priority and \
                not (lk.scheduling or "").startswith("SCHED_FIFO") and \
                len(self.linkems) == 1:
            self.log(f"warning: linkem runs {lk.scheduling}, not SCHED_FIFO "
                     f"(no CAP_SYS_NICE?); its timing will suffer under "
                     f"CPU load")
        for tap in (tap_a, tap_b):
            if not _iface_exists(tap):
                raise backends.BackendError(
                    f"linkem ({label}) said ready but {tap} does not exist")
        self.shaped.append((label, "left_to_right", tap_a, None))
        self.shaped.append((label, "right_to_left", tap_b, None))
        return lk

    def _attach(self, bridge, iface):
        if bridge in (S1, S2) and self.switch_kind == "ovs":
            _run(["ovs-vsctl", "add-port", bridge, iface])
        else:
            _run(["ip", "link", "set", iface, "master", bridge])
        _run(["ip", "link", "set", iface, "up"])

    def _detach(self, bridge, iface):
        if bridge in (S1, S2) and self.switch_kind == "ovs":
            _run(["ovs-vsctl", "del-port", bridge, iface])
        else:
            _run(["ip", "link", "set", iface, "nomaster"])

    def _shape_userspace(self, bottleneck, access):
        if bottleneck:
            self._start_linkem("bottleneck", *BN_TAPS)
            self._attach(S1, BN_TAPS[0])
            self._attach(S2, BN_TAPS[1])
            for t in BN_TAPS:
                self._quiet_iface(t)
        if access:
            # A host's port leaves its switch for a small bridge of its
            # own; linkem joins that bridge to the switch. Tap a is always
            # on the left, so linkem's a2b is left_to_right.
            for h in self.left + self.right:
                sw = S1 if h in self.left else S2
                port, br = f"{sw}-{h}", f"mqbx-{h}"
                tap_a, tap_b = f"mqb{h}-a", f"mqb{h}-b"
                self._detach(sw, port)
                _run(["ip", "link", "add", "name", br, "type", "bridge"])
                self._quiet_iface(br, offloads=False)
                _run(["ip", "link", "set", br, "up"])
                self._attach(br, port)
                self._start_linkem(f"access-{h}", tap_a, tap_b)
                host_tap, sw_tap = (tap_a, tap_b) if sw == S1 else \
                    (tap_b, tap_a)
                self._attach(br, host_tap)
                self._attach(sw, sw_tap)
                for t in (tap_a, tap_b):
                    self._quiet_iface(t)

    # ---- teardown --------------------------------------------------------

    def teardown(self):
        """Undo everything build() did, as far as it got. Never raises;
        what could not be undone is in self.problems (and the state file
        is then kept for `make clean-net`)."""
        def step(what, fn, *args):
            try:
                fn(*args)
            except Exception as e:     # keep tearing down
                self.problems.append(f"{what}: {e}")

        step("stopping host processes", self._stop_host_procs)
        step("collecting link statistics", self._collect_stats)
        if self.net is not None:
            step("stopping Mininet", self.net.stop)
        step("removing interfaces", self._remove_ifaces)
        if self._state is not None:
            step("restoring kernel settings", cleanup.restore_sysctls,
                 self._state.data, self.problems.append)
            left = cleanup.leftovers(self._state.data)
            if left:
                self.problems.append("left behind: " + ", ".join(left) +
                                     " (run make clean-net)")
            else:
                step("removing the state file", self._state.remove)
        if self._lock is not None:
            self._lock.release()
        for msg in self.problems:
            self.log(f"warning: teardown: {msg}")

    def _stop_host_procs(self):
        mine = [(p.pid, st) for p, st in self._procs]
        procs.terminate(mine)
        for p, _ in self._procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=1)
            for f in (p.stdout, p.stderr, p.stdin):
                if f:
                    with contextlib.suppress(Exception):
                        f.close()
        # Anything else in a host's namespace (started through its shell,
        # or by a process we started): all of it goes, except the shell.
        for name, node in self._hostinfo.items():
            ns = procs.netns_inode(node.pid)
            if ns is None:
                continue
            others = procs.pids_in_netns(ns, exclude={node.pid})
            procs.terminate([(pid, procs.starttime(pid)) for pid in others])

    def _collect_stats(self):
        links, logs = {}, {}
        if self.backend == "userspace":
            for label, lk in self.linkems.items():
                links[label] = lk.stop()
                if lk.problem:
                    self.problems.append(lk.problem)
                text = lk.stderr_text()
                if text:
                    logs[label] = text
        elif self.backend == "netem":
            for label, dname, dev, h in self.shaped:
                if h:
                    run = lambda argv, **kw: subprocess.run(      # noqa
                        ["mnexec", "-a", str(self._hostinfo[h].pid)] + argv,
                        **kw)
                else:
                    run = subprocess.run
                links.setdefault(label, {})[dname] = {
                    "interface": dev, "tc": backends.netem_stats(dev, run)}
        self.link_stats = {"backend": self.backend, "links": links}
        if logs:
            self.link_stats["stderr"] = logs

    def _remove_ifaces(self):
        if self._state is None:
            return
        d = self._state.data
        for name in d["interfaces"] + d["bridges"]:
            if _iface_exists(name):
                _run(["ip", "link", "del", name], check=False)


def _mininet_version():
    try:
        from mininet.net import VERSION
        return VERSION
    except ImportError:
        return None


class _SignalGuard:
    """Turns SIGTERM and SIGHUP into Terminated while the topology exists
    (where nobody else handles them), and holds off SIGINT, SIGTERM and
    SIGHUP while it is torn down, so a second Ctrl-C cannot cut teardown
    short; they are delivered right after."""
    SIGNALS = (signal.SIGTERM, signal.SIGHUP)
    BLOCK = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

    def __init__(self):
        self.saved = {}
        self.main = threading.current_thread() is threading.main_thread()

    def install(self):
        if not self.main:
            return
        for s in self.SIGNALS:
            if signal.getsignal(s) in (signal.SIG_DFL, None):
                self.saved[s] = signal.signal(s, self._raise)

    @staticmethod
    def _raise(signum, frame):
        raise Terminated(signum)

    @contextlib.contextmanager
    def blocked(self):
        old = signal.pthread_sigmask(signal.SIG_BLOCK, self.BLOCK)
        try:
            yield
        finally:
            self.restore()
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def restore(self):
        for s, h in self.saved.items():
            signal.signal(s, h)
        self.saved = {}


@contextlib.contextmanager
def dumbbell(profile, backend="auto", hosts=5, switch="linuxbridge",
             seed=1, log=None, linkem_rt_priority=backends.LINKEM_RT_PRIORITY):
    """Build the dumbbell, yield it, always tear it down.

    profile: a name in topologies/profiles/, a path to a .toml file, or a
    Profile. backend: "auto", "netem" or "userspace". Raises ProfileError,
    TopologyError or BackendError (one-line messages) if it cannot build;
    link statistics are in .link_stats after the block."""
    db = Dumbbell(profile, backend=backend, hosts=hosts, switch=switch,
                  seed=seed, log=log, linkem_rt_priority=linkem_rt_priority)
    guard = _SignalGuard()
    guard.install()
    try:
        db.build()
        yield db
    finally:
        with guard.blocked():
            db.teardown()


# ---- command line -----------------------------------------------------------

def fmt_rate(bps):
    for unit, k in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if bps >= k:
            return f"{bps / k:g}{unit}/s"
    return f"{bps}bit/s"


def _describe_direction(d):
    loss = f"{d.loss * 100:.4g}% loss"
    if d.loss_model == "gilbert-elliott":
        loss = f"Gilbert-Elliott loss, mean {d.loss * 100:.4g}%"
    jit = f" +-{d.jitter_us / 1000:g}ms" if d.jitter_us else ""
    q = f"{d.queue_packets} packets" if d.queue_packets is not None else \
        f"{d.queue_bytes} bytes"
    return (f"{fmt_rate(d.rate_bps)}, {d.delay_us / 1000:g}ms"
            f"{jit} one way, {loss}, queue {q}")


def summary_lines(db):
    p = db.profile
    lines = []
    if p.symmetric():
        lines.append(f"profile {p.name}: "
                     f"{_describe_direction(p.left_to_right)} (each "
                     f"direction), on {' and '.join(p.applies)}")
    else:
        lines.append(f"profile {p.name} on {' and '.join(p.applies)}:")
        for d in profiles.DIRECTIONS:
            lines.append(f"  {d}: {_describe_direction(p.direction(d))}")
    lines.append(f"backend: {db.backend_note}")
    lines.append(f"switches: {S1}, {S2} ({db.switch_kind}); hosts: " +
                 " ".join(f"{h}={host_ip(h)}" for h in db.left + db.right))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python3 -m topologies.dumbbell",
        description="Build the benchmark's Mininet dumbbell with a link "
        "profile, run commands on its hosts or open the Mininet CLI, then "
        "tear it all down. Host IPs are in $L1.. $LN, $R1.. $RN for --cmd.")
    ap.add_argument("--profile", required=False,
                    help="profile name (topologies/profiles/NAME.toml) or "
                    "path to a .toml file")
    ap.add_argument("--backend", default="auto",
                    choices=("auto", "netem", "userspace"))
    ap.add_argument("--hosts", type=int, default=5,
                    help="hosts per side (default 5)")
    ap.add_argument("--switch", default="linuxbridge", choices=SWITCH_KINDS)
    ap.add_argument("--seed", type=int, default=1,
                    help="seed of the userspace emulator's loss model")
    ap.add_argument("--cmd", nargs=2, action="append", default=[],
                    metavar=("HOST", "COMMAND"),
                    help="run a shell command on a host (repeatable)")
    ap.add_argument("--cli", action="store_true",
                    help="open the Mininet CLI")
    ap.add_argument("--list-profiles", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="Mininet's own progress messages")
    args = ap.parse_args(argv)

    def fail(msg, code=1):
        print(f"error: {msg}", file=sys.stderr)
        return code

    if args.list_profiles:
        for name in profiles.profile_names():
            try:
                p = profiles.load_profile(name)
                print(f"{name:10} {_describe_direction(p.left_to_right)}"
                      f"{'' if p.symmetric() else ' (asymmetric)'}")
            except profiles.ProfileError as e:
                print(f"{name:10} error: {e}")
        return 0
    if not args.profile:
        return fail("--profile is required (see --list-profiles)", 2)
    for host, _ in args.cmd:
        if not re.fullmatch(r"[lr]\d+", host) or \
                not 1 <= int(host[1:]) <= args.hosts:
            return fail(f"--cmd: no host {host!r} in a {args.hosts}+"
                        f"{args.hosts} dumbbell (l1..l{args.hosts}, "
                        f"r1..r{args.hosts})", 2)

    from mininet.log import setLogLevel
    # The CLI prints through Mininet's "output" level.
    setLogLevel("info" if args.verbose else
                "output" if args.cli else "warning")
    status = 0
    try:
        with dumbbell(args.profile, backend=args.backend, hosts=args.hosts,
                      switch=args.switch, seed=args.seed) as db:
            for line in summary_lines(db):
                print(line, file=sys.stderr)
            env = dict(os.environ, **db.hosts_env())
            for host, command in args.cmd:
                p = db.popen(host, ["sh", "-c", command], stdin=None,
                             stdout=None, stderr=None, env=env)
                rc = p.wait()
                db.check()
                if rc != 0:
                    print(f"{host}: command exited with status {rc}",
                          file=sys.stderr)
                    status = rc
            if args.cli:
                from mininet.cli import CLI
                CLI(db.net)
            elif not args.cmd:
                r = db.run("l1", ["ping", "-n", "-q", "-c", "3", "-i", "0.2",
                                  "-W", "3", db.ip("r1")], timeout=30,
                           text=True)
                last = [ln for ln in r.stdout.splitlines() if ln.strip()]
                print(f"l1 -> r1: {last[-2] if len(last) > 1 else r.stdout}"
                      f"{' / ' + last[-1] if len(last) > 1 else ''}",
                      file=sys.stderr)
                if r.returncode != 0:
                    status = 1
                db.check()
    except profiles.ProfileError as e:
        return fail(str(e), 2)
    except (TopologyError, backends.BackendError) as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return fail("interrupted; topology torn down", 130)
    except Terminated as e:
        return fail(f"{e}; topology torn down", 128 + e.signum)
    if db.problems:
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
