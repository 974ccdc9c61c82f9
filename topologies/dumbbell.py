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
import json
import os
import re
import resource
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

from . import backends, cleanup, contention, offloads, procs, profiles, state

S1, S2 = "mqbs1", "mqbs2"
BN_PORTS = ("mqbs1-bn", "mqbs2-bn")
BN_TAPS = ("mqbbn-a", "mqbbn-b")
MAX_HOSTS = 99
BRIDGE_NF = ("arptables", "iptables", "ip6tables")
SWITCH_KINDS = ("linuxbridge", "ovs")
# What building needs from the system, by command and Debian package.
# Mininet would find some of them missing only half way through (and then
# print three lines and exit the process); the rest it would not notice
# (a missing ifconfig leaves hosts without addresses).
REQUIRED_TOOLS = {
    "ip": "iproute2", "tc": "iproute2", "brctl": "bridge-utils",
    "ethtool": "ethtool", "mnexec": "mininet", "ifconfig": "net-tools",
    "arp": "net-tools", "sysctl": "procps", "nsenter": "util-linux",
}
# linkem's seed for a link is seed * SEED_STRIDE + the link's index
# (link_seed); seeds up to MAX_SEED keep that inside 64 bits.
SEED_STRIDE = 1000
MAX_SEED = (2**64 - 1) // SEED_STRIDE - 1
SHELL_SETTLE_S = 0.3     # a busy Mininet shell's command may still finish
SHELL_INTERRUPT_S = 2.0  # ... or, after a Ctrl-C (sendInt), come back



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


def link_seed(seed, label):
    """The loss-model seed of one emulated link: seed * 1000 plus the
    link's index (bottleneck 0, access-lI I, access-rI 100 + I). Every
    link draws its own stream, so losses on the access links and the
    bottleneck are independent (as the calibration's loss interval
    assumes), and the same --seed repeats every one of them."""
    if label == "bottleneck":
        idx = 0
    else:
        m = re.fullmatch(r"access-([lr])(\d+)", label)
        if not m or not 1 <= int(m.group(2)) <= MAX_HOSTS:
            raise ValueError(f"no link {label!r}")
        idx = int(m.group(2)) + (100 if m.group(1) == "r" else 0)
    return seed * SEED_STRIDE + idx


def check_tools(tools):
    """Raise TopologyError naming every command of `tools` ({command:
    Debian package}) that is not on PATH, and the packages to install."""
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    pkgs = sorted({tools[t] for t in missing})
    raise TopologyError(
        f"missing command{'s' if len(missing) > 1 else ''} "
        f"{', '.join(missing)}: install the Debian "
        f"package{'s' if len(pkgs) > 1 else ''} {' '.join(pkgs)} "
        f"(apt-get install {' '.join(pkgs)}, or make deps)")


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
                 linkem_rt_priority=backends.LINKEM_RT_PRIORITY,
                 lock_timeout=None,
                 timing_error_limit_us=contention.TIMING_ERROR_P99_LIMIT_US,
                 congestion_control=None):
        self.profile = profiles.load_profile(profile)
        self.congestion_control = congestion_control
        self.cc_routes = None     # host -> its routes, once congctl is set
        self.requested_backend = backend
        if not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
            raise TopologyError(f"--hosts must be between 1 and "
                                f"{MAX_HOSTS}, got {hosts}")
        if switch not in SWITCH_KINDS:
            raise TopologyError(f"unknown switch {switch!r}; use "
                                f"linuxbridge or ovs")
        if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise TopologyError(f"--seed must be a whole number from 0 to "
                                f"{MAX_SEED}, got {seed}")
        self.n = hosts
        self.switch_kind = switch
        self.seed = seed
        self.linkem_rt_priority = linkem_rt_priority
        self.lock_timeout = state.lock_timeout_default() \
            if lock_timeout is None else lock_timeout
        self.timing_error_limit_us = timing_error_limit_us
        self.contention_warning = None   # the line, if the emulator was late
        self.offloads = {}               # interface -> what was turned off
        self._cpu_before = None
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
        self._guard = None    # the _SignalGuard of dumbbell(), if any

    def _held(self):
        """Context in which SIGINT, SIGTERM and SIGHUP wait: around a step
        that creates something and records it, so that no signal can
        leave it made but unrecorded."""
        return self._guard.held() if self._guard else \
            contextlib.nullcontext()

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
        with self._held():
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
            "seed": self.seed,
            # TCP's congestion control as set on every host's routes
            # (None: each namespace's default, in the runner's hosts_tcp)
            "congestion_control": self.congestion_control,
            "congctl_routes": self.cc_routes,
            # Each emulated link's own loss stream (link_seed); netem's
            # draws cannot be seeded (iproute2 6.1 has no option for it).
            "link_seeds": ({lab: link_seed(self.seed, lab)
                            for lab in self.linkems}
                           if self.backend == "userspace" else None),
            "profile": self.profile.to_dict(),
            "shaped": [{"link": lab, "direction": d, "interface": dev,
                        "namespace": h or "root"}
                       for lab, d, dev, h in self.shaped],
            "offloads": {
                "interfaces": sorted(self.offloads),
                "off": sorted({n for o in self.offloads.values()
                               for n in o["off"]}),
                "gso_max_segs": offloads.GSO_MAX_SEGS},
            "cpu_at_start": self._cpu_before,
            "lock": {"path": self._lock.path if self._lock else None,
                     "timeout_s": self.lock_timeout},
            "linkem": ({"binary": self.linkem_bin,
                        "version": backends.linkem_version(self.linkem_bin),
                        "scheduling": {lab: lk.scheduling for lab, lk in
                                       self.linkems.items()}}
                       if self.linkem_bin else None),
            "kernel": os.uname().release,
            "mininet": _mininet_version(),
        }

    # ---- building --------------------------------------------------------

    def _planned_names(self):
        """(interfaces, bridges) this build will create in the root
        namespace: ports before bridges, the order cleanup deletes them."""
        access = "access" in self.profile.applies
        bottleneck = "bottleneck" in self.profile.applies
        userspace = self.backend == "userspace"
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
        return names, bridges

    def build(self):
        if os.geteuid() != 0:
            raise TopologyError("must run as root (Mininet creates "
                                "namespaces, bridges and veths)")
        check_tools(REQUIRED_TOOLS)
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

        if self.backend == "netem":
            self._check_netem()
        # Waits (one line) while another run holds the network; the lock
        # is recorded in self._lock the instant it is taken, and teardown
        # releases it.
        self._lock = state.Lock()
        try:
            self._lock.acquire(self.lock_timeout, self.log)
        except state.Busy as e:
            self._lock = None
            raise TopologyError(str(e)) from None
        self._cpu_before = contention.cpu_times()
        left, unrecorded = cleanup.clean_stale(log=self.log)
        names, bridges = self._planned_names()
        taken = [n for n in names + bridges if _iface_exists(n)]
        if taken:
            them = "it" if len(taken) == 1 else "them"
            if set(taken) <= set(unrecorded):
                how = (f"no run recorded {them}, so {them} may not be "
                       f"ours; if nothing else uses {them}, delete with: " +
                       "; ".join(f"ip link del {n}" for n in taken))
            else:
                how = "a dead run's cleanup could not remove " \
                    f"{them}; see what `make clean-net` says"
            raise TopologyError(
                f"cannot build: {', '.join(taken)} already "
                f"exist{'s' if len(taken) == 1 else ''} ({how})")
        if left:
            self.log("warning: leftovers of a dead run could not be "
                     "removed: " + ", ".join(left))
        if unrecorded:
            self.log("warning: " + cleanup.unrecorded_line(unrecorded))
        with self._held():
            self._state = state.RunState(argv=sys.argv)
            self._bridge_nf_off()

        access = "access" in self.profile.applies
        bottleneck = "bottleneck" in self.profile.applies
        userspace = self.backend == "userspace"
        # Recorded before they exist (state.py).
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

        sw = OVSBridge if self.switch_kind == "ovs" else \
            _quiet_bridge_class(LinuxBridge)
        net = Mininet(topo=None, build=False, controller=None, switch=sw,
                      link=Link, ipBase="10.0.0.0/16", autoStaticArp=True)
        self.net = net
        # Each node's shell is started and recorded with signals held: a
        # shell Mininet has started but not yet listed would outlive us.
        for s in (S1, S2):
            with self._held():
                node = net.addSwitch(s)
                self._state.add_process(node.pid, f"switch shell {s}")
        for h in self.left + self.right:
            with self._held():
                node = net.addHost(h, ip=host_ip(h) + "/16",
                                   mac=host_mac(h))
                self._hostinfo[h] = node
                self._state.add_host(h, node.pid, [f"{h}-eth0"],
                                     {f"{h}-eth0": host_mac(h)})
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
            self._offloads_off(f"{h}-eth0", h)
            if self.congestion_control:
                self._set_congctl(h, self.congestion_control)
        for name in [S1, S2] + names:
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

    def _set_congctl(self, h, cc):
        """TCP congestion control cc for every connection of host h:
        congctl on each of its routes, which active and accepted
        connections take. (The namespace's default, the sysctl, can only
        be set to what the VM's global tcp_allowed_congestion_control
        lists; routes need no such change.)"""
        table = json.loads(self._in_host(h, ["ip", "-j", "route",
                                             "show"]).stdout or "[]")
        for rt in table:
            spec = [rt["dst"]]
            for key, word in (("gateway", "via"), ("dev", "dev"),
                              ("protocol", "proto"), ("scope", "scope"),
                              ("prefsrc", "src"), ("metric", "metric")):
                if rt.get(key) is not None:
                    spec += [word, str(rt[key])]
            self._in_host(h, ["ip", "route", "replace"] + spec +
                          ["congctl", cc])
        self.cc_routes = self.cc_routes or {}
        self.cc_routes[h] = self._in_host(
            h, ["ip", "route", "show"]).stdout.splitlines()

    def _offloads_off(self, dev, host=None):
        """Every offload that merges packets off on dev (in host's
        namespace, or the root one), and no multi-segment packets
        (offloads.py)."""
        if host:
            pid = str(self._hostinfo[host].pid)
            run = lambda argv: subprocess.run(                 # noqa: E731
                ["mnexec", "-a", pid] + argv, capture_output=True,
                text=True)
        else:
            run = lambda argv: subprocess.run(                 # noqa: E731
                argv, capture_output=True, text=True)
        try:
            self.offloads[dev] = offloads.turn_off(dev, run)
        except offloads.OffloadError as e:
            raise TopologyError(str(e)) from None

    def _check_netem(self):
        """Fail before building if netem cannot do what the profile
        asks."""
        for dname in profiles.DIRECTIONS:
            why = backends.netem_unsupported(self.profile.direction(dname))
            if why:
                raise backends.BackendError(
                    f"profile {self.profile.name}: {why}")

    def _quiet_iface(self, name):
        """Offloads off and IPv6 off on a root-namespace interface."""
        self._offloads_off(name)
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
            os.path.join(rd, f"linkem-{label}.json"),
            link_seed(self.seed, label),
            os.path.join(rd, f"linkem-{label}.log"), label,
            rt_priority=self.linkem_rt_priority)
        self.linkems[label] = lk
        with self._held():     # started (milliseconds) and recorded
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
                _run(["ip", "link", "add", "name", br, "type", "bridge",
                      "mcast_snooping", "0"])
                self._quiet_iface(br)
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
                self.problems.append(f"{what}: {str(e) or repr(e)}")

        step("stopping host processes", self._stop_host_procs)
        step("collecting link statistics", self._collect_stats)
        if self.net is not None:
            step("stopping Mininet", self._stop_mininet)
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

    def _stop_mininet(self):
        """net.stop(), made safe for a build or a command cut short.

        Mininet talks to its nodes through their shells, and refuses to
        (an assertion) while a shell still runs a command that a signal
        interrupted; a shell that never returns would hang it. So each
        busy shell first gets a moment to finish (its host's processes are
        gone by now), then a Ctrl-C; a shell still busy after that is not
        handed to net.stop() at all. Whatever net.stop() did or did not
        do, the shells recorded for this run are stopped afterwards, as
        cleanup does for a killed run, and their ptys closed."""
        net = self.net
        nodes = list(net.hosts) + list(net.switches) + list(net.controllers)
        stuck = [n.name for n in nodes if not _settle_shell(n)]
        if stuck:
            self.log(f"note: teardown: the shell of {', '.join(stuck)} "
                     f"stayed busy; stopping the shells directly instead "
                     f"of through Mininet")
        else:
            try:
                net.stop()
            except Exception as e:
                self.log(f"note: teardown: Mininet's stop failed ({e!r}); "
                         f"stopping its shells directly")
        shells = [(h["pid"], h["starttime"])
                  for h in self._state.data["hosts"]] + \
            [(p["pid"], p["starttime"])
             for p in self._state.data["processes"]
             if p["what"].startswith("switch shell ")]
        left = procs.terminate(shells)
        for n in nodes:
            if n.shell is not None and n.shell.poll() is not None:
                with contextlib.suppress(Exception):
                    n.cleanup()        # closes its pty
        if left:
            raise TopologyError("shells still running: " +
                                ", ".join(str(p) for p, _ in left))

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
        rec, line = contention.summary(
            links if self.backend == "userspace" else {},
            self._cpu_before, contention.cpu_times(),
            self.timing_error_limit_us)
        self.link_stats["contention"] = rec
        if line:
            self.contention_warning = line
            self.log(line)

    def _remove_ifaces(self):
        if self._state is None:
            return
        d = self._state.data
        if self.switch_kind == "ovs":
            # Open vSwitch bridges are not ip links to delete (net.stop()
            # does this too, unless it was skipped or failed).
            for br in (S1, S2):
                if _iface_exists(br):
                    _run(["ovs-vsctl", "--timeout=5", "--if-exists",
                          "del-br", br], check=False)
        for name in d["interfaces"] + d["bridges"]:
            if _iface_exists(name):
                _run(["ip", "link", "del", name], check=False)


def bridge_quiet(name):
    """Make a new Linux bridge send nothing of its own once up: with
    multicast snooping on, it joins the all-snoopers group (224.0.0.106)
    and its IGMP reports cross the emulated link like a host's frames
    (the calibration's queue test counted them); with IPv6 on, its MLD
    reports and router solicitations do the same."""
    for path, value in ((f"/sys/class/net/{name}/bridge/multicast_snooping",
                         "0"),
                        (f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6",
                         "1")):
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError:
            pass


def _quiet_bridge_class(base):
    """Mininet's LinuxBridge, quieted (bridge_quiet) between its
    creation and its coming up; otherwise as Mininet starts it (its
    start(), without spanning tree, which the dumbbell never uses)."""
    class QuietBridge(base):
        def start(self, _controllers):
            self.cmd("ifconfig", self, "down")
            self.cmd("brctl delbr", self)
            self.cmd("brctl addbr", self)
            bridge_quiet(self.name)
            for i in self.intfList():
                if self.name in i.name:
                    self.cmd("brctl addif", self, i)
            self.cmd("ifconfig", self, "up")
    return QuietBridge


def _settle_shell(node):
    """Bring a Mininet node's shell back to its prompt: True if it is
    (or was) idle, False if it stays busy. Reads what a command cut short
    left; sends a Ctrl-C if the command does not end by itself (or if a
    signal made us lose the prompt it printed). Never blocks: Mininet's
    own monitor() polls for POLLOUT too, which a pty always has, and then
    blocks in read(); here a read happens only when select() says there
    is something to read."""
    if node.shell is None or not node.waiting:
        return True
    fd = node.stdout.fileno()
    try:
        for wait, interrupt in ((SHELL_SETTLE_S, False),
                                (SHELL_INTERRUPT_S, True)):
            if interrupt:
                node.sendInt()
            deadline = time.monotonic() + wait
            while node.waiting:
                if chr(127) in node.readbuf:   # the prompt, read already
                    node.readbuf = ""
                    node.waiting = False
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                r, _, _ = select.select([fd], [], [], min(left, 0.05))
                if r:
                    node.monitor(timeoutms=0, findPid=False)
            if not node.waiting:
                return True
    except (OSError, ValueError):
        return False
    return False


def _mininet_version():
    try:
        from mininet.net import VERSION
        return VERSION
    except ImportError:
        return None


class _SignalGuard:
    """Signals while a topology exists.

    SIGTERM and SIGHUP, where nobody else handles them, become Terminated
    (SIGINT stays KeyboardInterrupt, a handler someone installed stays
    theirs). Any of the three that arrives inside held() waits until the
    held step is over and is then delivered as it would have been: the
    steps that create something and record it (so a signal cannot leave
    it made but unrecorded), and teardown (so a second Ctrl-C cannot cut
    it short; there the signal goes, after teardown, to the handlers that
    were in place before the topology, and SIGTERM's default then ends
    the process by it).

    It is all done in Python's handlers, which run in the main thread
    whichever thread the kernel delivered the signal to; outside the main
    thread no handler can interrupt the topology's code, and the guard
    does nothing."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.saved = {}
        self.depth = 0
        self.pending = []
        self.main = threading.current_thread() is threading.main_thread()

    def install(self):
        if not self.main:
            return
        for s in self.SIGNALS:
            old = signal.getsignal(s)
            if old is None or old == signal.SIG_IGN or \
                    (s == signal.SIGINT and old == signal.SIG_DFL):
                continue
            self.saved[s] = old
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        if self.depth:
            if signum not in self.pending:
                self.pending.append(signum)
            return
        self._deliver(signum, frame)

    def _deliver(self, signum, frame):
        old = self.saved.get(signum, signal.SIG_DFL)
        if callable(old):
            old(signum, frame)       # KeyboardInterrupt, or the caller's
        else:
            raise Terminated(signum)

    @contextlib.contextmanager
    def held(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                signum = self.pending[0]
                self.pending = []
                self._deliver(signum, None)

    @contextlib.contextmanager
    def final(self):
        """Hold signals for teardown, then give the handlers back and
        deliver what was held to them."""
        self.depth += 1
        try:
            yield
        finally:
            # Not held while the handlers go back: one arriving meanwhile
            # is delivered at once, as it would be by the handler it finds.
            self.depth -= 1
            pending, self.pending = self.pending, []
            for s in list(self.saved):
                signal.signal(s, self.saved[s])
                del self.saved[s]
            for signum in pending:
                signal.raise_signal(signum)


@contextlib.contextmanager
def dumbbell(profile, backend="auto", hosts=5, switch="linuxbridge",
             seed=1, log=None, linkem_rt_priority=backends.LINKEM_RT_PRIORITY,
             lock_timeout=None,
             timing_error_limit_us=contention.TIMING_ERROR_P99_LIMIT_US,
             congestion_control=None):
    """Build the dumbbell, yield it, always tear it down.

    profile: a name in topologies/profiles/, a path to a .toml file, or a
    Profile. backend: "auto", "netem" or "userspace". lock_timeout: how
    long to wait, saying so in one line, while another run holds the
    network (default MQB_LOCK_TIMEOUT or 600 s). Raises ProfileError,
    TopologyError or BackendError (one-line messages) if it cannot build;
    link statistics are in .link_stats after the block, with a
    "contention" record; .contention_warning holds the line printed when
    the emulator's timing error p99 exceeded timing_error_limit_us.
    congestion_control: TCP's algorithm for every host (congctl on each
    route), or None for each namespace's default."""
    db = Dumbbell(profile, backend=backend, hosts=hosts, switch=switch,
                  seed=seed, log=log, linkem_rt_priority=linkem_rt_priority,
                  lock_timeout=lock_timeout,
                  timing_error_limit_us=timing_error_limit_us,
                  congestion_control=congestion_control)
    guard = _SignalGuard()
    guard.install()
    db._guard = guard
    try:
        db.build()
        yield db
    finally:
        with guard.final():
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
                    help="seed of the userspace emulators' loss models "
                    "(default 1; each link draws from seed x 1000 + its "
                    "index)")
    ap.add_argument("--lock-timeout", type=float, default=None,
                    metavar="SECONDS",
                    help="while another run holds the network, wait this "
                    "long for it (default $MQB_LOCK_TIMEOUT or "
                    f"{state.LOCK_TIMEOUT_S:g}); 0: do not wait")
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
    if not 1 <= args.hosts <= MAX_HOSTS:
        return fail(f"--hosts must be between 1 and {MAX_HOSTS}", 2)
    if not 0 <= args.seed <= MAX_SEED:
        return fail(f"--seed must be a whole number from 0 to {MAX_SEED}",
                    2)
    if args.lock_timeout is not None and not args.lock_timeout >= 0:
        return fail("--lock-timeout must be 0 or more seconds", 2)
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
                      switch=args.switch, seed=args.seed,
                      lock_timeout=args.lock_timeout) as db:
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
