"""The two link backends, and the choice between them.

Both give a profile Direction the same meaning (profiles/README.md):
frames lost by the loss model at arrival, then a drop-tail queue, FIFO
serialisation at the rate (whole Ethernet frames, header included, as
htb and tc count them), then the one-way delay with optional uniform
jitter that never reorders.

netem (kernel): two netem qdiscs on the sending interface of each
direction, so that netem means what linkem means:
  - the root qdisc ("delay stage") draws the loss model at arrival and
    holds every frame for the delay (+ jitter); its limit is large
    (NETEM_DELAY_LIMIT), since a delay line is a wire, not a buffer. With
    jitter it also gets a rate far above any link's (NETEM_ORDER_RATE),
    which makes netem schedule every frame after the one ahead: in order,
    as linkem, where jitter never reorders.
  - its child (parent 1:1, "rate stage") is the link's transmitter and
    its drop-tail queue: netem's own `rate` (with the profile's
    packet_overhead and cells, netem's "rate R OVERHEAD CELLSIZE
    CELLOVERHEAD"), limit = the profile's queue + the one frame in
    transmission. netem counts in its limit every frame it holds, and a
    frame stays in the rate stage only until its last bit is sent, so
    this limit counts exactly what linkem's queue counts.
  Why delay before rate: netem's limit also counts the frames of a child
  qdisc, so a rate stage on top would count the whole delay line again
  (the old single-qdisc limit did: small frames filled it and capped the
  rate). A constant delay commutes with a FIFO transmitter: the frame
  that reaches the transmitter D later finds the same queue its
  counterpart found in linkem D earlier, so drops and departures are the
  same. What still differs is in profiles/README.md ("What netem cannot
  match"): jitter is drawn before serialisation, per-cell loss is not
  available.
  - netem's rate serialises every frame: a frame leaves at
    max(previous departure, arrival) + its serialisation time. A token
    bucket (htb, tbf) instead lets a frame through at once while it has
    tokens, so an isolated 98-byte ping would skip its 3 ms of
    serialisation at 250 kbit/s and the two backends would disagree by
    6 ms of RTT. With no token bucket, there is no burst to size.
  - segmentation and receive offloads are off on every emulated interface
    and no device lets a socket build more than one segment per packet
    (dumbbell.py), so netem sees wire-size frames, never 64 kB ones.
  - Mininet's TCLink is not used: it puts the same delay and loss on both
    ends of a link (doubling them) and sizes htb's burst at a fixed 15 kB.

userspace: bench/linkem/linkem.c on a pair of TAP devices (the contract is in
the lead's linkem contract; options map one to one).
"""
import json
import math
import os
import select
import signal
import subprocess
import time
from pathlib import Path

from . import procs

MTU_FRAME = 1514          # 1500-byte MTU + 14-byte Ethernet header
# linkem's largest --queue-packets: a byte limit alone goes with this
# packet limit, so that however small the frames, the byte limit binds.
LINKEM_MAX_QUEUE_PACKETS = 2**32 - 1
READY_TIMEOUT_S = 30.0  # device creation can wait behind another namespace's teardown
# linkem runs SCHED_FIFO at this priority: the emulated link must keep its
# timing while the benchmark's own processes load both cores. Measured on
# the 2-core VM with two CPU hogs, 4 Mbit/s, 4000 frames/s: departure
# lateness p99 53 us instead of 4.8 ms (nice -15: 5.0 ms, no better).
# linkem sleeps in epoll when idle and polls only briefly before a
# departure (--spin-us), and the kernel's RT throttling bounds it anyway.
LINKEM_RT_PRIORITY = 10
STOP_TIMEOUT_S = 5.0
REPO = Path(__file__).resolve().parent.parent

NO_NETEM = "this kernel has no sch_netem; use --backend userspace"


class BackendError(Exception):
    """One-line description of what went wrong with link emulation."""


# ---- netem ----------------------------------------------------------------

def pct(p):
    """A probability as tc's percentage text: 0.015 -> "1.5%"."""
    s = f"{p * 100:.6f}".rstrip("0").rstrip(".")
    return (s or "0") + "%"


def queue_packets(d):
    """The profile's queue in frames (netem cannot count bytes: a byte
    limit becomes that many full-size frames)."""
    if d.queue_packets is not None:
        return d.queue_packets
    return math.ceil(d.queue_bytes / MTU_FRAME)


# The delay stage's limit: frames on the delay line, which is not a
# buffer. Only a sender pushing a million frames into one delay (25 Mpps
# for 40 ms) would meet it.
NETEM_DELAY_LIMIT = 1_000_000
# A rate on the delay stage makes netem keep frames in order under
# jitter; this one costs a 1514-byte frame 12 ns.
NETEM_ORDER_RATE = "1000Gbit"


def netem_unsupported(d):
    """Why netem cannot emulate Direction d, or None."""
    if d.loss_per_cell:
        return ("loss per cell (loss_unit = \"cell\") has no netem "
                "equivalent; use --backend userspace")
    return None


def netem_queue_limit(d):
    """The rate stage's limit: the queue plus the frame in
    transmission."""
    return queue_packets(d) + 1


def netem_delay_args(d):
    """Arguments after `netem` for the delay stage of Direction d."""
    args = ["limit", str(NETEM_DELAY_LIMIT), "delay", f"{d.delay_us}us"]
    if d.jitter_us:
        # No `distribution`: the kernel then draws uniformly in
        # [delay - jitter, delay + jitter], as linkem does.
        args += [f"{d.jitter_us}us", "rate", NETEM_ORDER_RATE]
    if d.loss_model == "gilbert-elliott":
        g = d.ge
        # netem's gemodel takes p, r, 1-h (loss in bad), 1-k (loss in good)
        args += ["loss", "gemodel", pct(g.p), pct(g.r), pct(g.loss_bad),
                 pct(g.loss_good)]
    elif d.loss > 0:
        args += ["loss", "random", pct(d.loss)]
    return args


def netem_rate_args(d):
    """Arguments after `netem` for the rate stage of Direction d (None at
    an unlimited rate: no transmitter, no queue)."""
    if not d.rate_bps:
        return None
    args = ["limit", str(netem_queue_limit(d)), "rate", f"{d.rate_bps}bit"]
    if d.cell_size:
        # positional after the rate: PACKETOVERHEAD CELLSIZE CELLOVERHEAD
        args += [str(d.packet_overhead), str(d.cell_size),
                 str(d.cell_overhead)]
    elif d.packet_overhead:
        args += [str(d.packet_overhead)]
    return args


def netem_commands(dev, d):
    """The tc command lines that shape frames leaving dev as Direction d."""
    why = netem_unsupported(d)
    if why:
        raise BackendError(why)
    cmds = [["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:",
             "netem"] + netem_delay_args(d)]
    rate = netem_rate_args(d)
    if rate:
        cmds.append(["tc", "qdisc", "replace", "dev", dev, "parent", "1:1",
                     "handle", "10:", "netem"] + rate)
    return cmds


_probe_cache = None


def probe_netem():
    """(available, reason): try a netem qdisc on a veth in a throwaway
    network namespace. The namespace dies with the `unshare` process, so
    the probe leaves nothing behind even if we are killed during it."""
    global _probe_cache
    if _probe_cache is not None:
        return _probe_cache
    script = ("ip link add mqbp0 type veth peer name mqbp1 && "
              "tc qdisc add dev mqbp0 root netem delay 1ms")
    try:
        r = subprocess.run(["unshare", "--net", "sh", "-c", script],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        _probe_cache = (False, f"cannot probe for sch_netem: {e}")
        return _probe_cache
    err = (r.stderr or "").strip().splitlines()
    if r.returncode == 0:
        _probe_cache = (True, "this kernel has sch_netem")
    elif any("qdisc kind is unknown" in ln for ln in err):
        _probe_cache = (False, "this kernel has no sch_netem")
    else:
        _probe_cache = (False, "netem probe failed: " +
                        (err[-1] if err else f"status {r.returncode}"))
    return _probe_cache


def choose_backend(requested):
    """("netem" | "userspace", one-line note) for --backend requested."""
    if requested not in ("auto", "netem", "userspace"):
        raise BackendError(f"unknown backend {requested!r}; use auto, netem "
                           f"or userspace")
    if requested == "userspace":
        return "userspace", "userspace (requested)"
    ok, why = probe_netem()
    if requested == "netem":
        if not ok:
            if why == "this kernel has no sch_netem":
                raise BackendError(NO_NETEM)
            raise BackendError(f"{why}; use --backend userspace")
        return "netem", "netem (requested)"
    if ok:
        return "netem", "netem (auto: this kernel has sch_netem)"
    return "userspace", f"userspace (auto: {why})"


def netem_stats(dev, run=subprocess.run):
    """tc's counters for the qdiscs on dev, as tc's JSON, or None."""
    try:
        r = run(["tc", "-s", "-j", "qdisc", "show", "dev", dev],
                capture_output=True, text=True, timeout=5)
        return json.loads(r.stdout) if r.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


# ---- userspace: linkem -----------------------------------------------------

def find_linkem():
    """Path of the linkem binary: $BENCH_BIN/linkem, by default
    build/release/bin/linkem in the repository."""
    bindir = os.environ.get("BENCH_BIN") or str(REPO / "build/release/bin")
    path = os.path.join(bindir, "linkem")
    if not os.access(path, os.X_OK):
        raise BackendError(f"linkem not found at {path}; run `make` first "
                           f"(or set BENCH_BIN to the folder holding it)")
    return path


def linkem_link_args(a2b, b2a):
    """linkem options for two Directions (a2b = frames from tap-a)."""
    args = []
    for pre, d in (("a2b", a2b), ("b2a", b2a)):
        args += [f"--{pre}-rate={d.rate_bps}",
                 f"--{pre}-delay-us={d.delay_us}"]
        if d.jitter_us:
            args.append(f"--{pre}-jitter-us={d.jitter_us}")
        if d.loss_model == "gilbert-elliott":
            g = d.ge
            args.append(f"--{pre}-loss-ge={g.p!r},{g.r!r},{g.loss_bad!r},"
                        f"{g.loss_good!r}")
        elif d.loss > 0:
            args.append(f"--{pre}-loss={d.loss!r}")
        if d.packet_overhead:
            args.append(f"--{pre}-packet-overhead={d.packet_overhead}")
        if d.cell_size:
            args += [f"--{pre}-cell-size={d.cell_size}",
                     f"--{pre}-cell-overhead={d.cell_overhead}"]
        if d.loss_per_cell:
            args.append(f"--{pre}-loss-unit=cell")
        if d.queue_packets is not None:
            args.append(f"--{pre}-queue-packets={d.queue_packets}")
        else:
            # A byte limit alone: the packet limit must never bind
            # first, whatever the frames' size (the bridge hands over
            # frames of 14 bytes and up, not just 60), so it is linkem's
            # maximum; linkem allocates per frame, not per limit.
            args += [f"--{pre}-queue-packets={LINKEM_MAX_QUEUE_PACKETS}",
                     f"--{pre}-queue-bytes={d.queue_bytes}"]
    return args


class Linkem:
    """One linkem process emulating one link between tap_a and tap_b."""

    def __init__(self, binary, tap_a, tap_b, a2b, b2a, stats_path, seed,
                 log_path, label, rt_priority=LINKEM_RT_PRIORITY):
        self.label = label
        self.rt_priority = rt_priority
        self.scheduling = None
        self.problem = None
        self.start_failed = False
        self.tap_a, self.tap_b = tap_a, tap_b
        self.stats_path = stats_path
        self.log_path = log_path
        self.argv = [binary, "--tap-a", tap_a, "--tap-b", tap_b] + \
            linkem_link_args(a2b, b2a) + \
            ["--stats", stats_path, "--seed", str(seed)]
        self.proc = None
        self.stats = None
        self.exit_status = None

    def start(self, timeout=READY_TIMEOUT_S):
        """Start linkem and wait for its "ready" line; BackendError if it
        fails, exits or stays silent."""
        try:
            return self._start(timeout)
        except BackendError:
            self.start_failed = True
            raise

    def _start(self, timeout):
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log, preexec_fn=procs.die_with_parent(
                    rt_priority=self.rt_priority))
        except OSError as e:
            raise BackendError(f"cannot start linkem: {e}") from None
        finally:
            log.close()
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise BackendError(f"linkem ({self.label}) did not print "
                                   f"\"ready\" within {timeout:g} s"
                                   f"{self._last_words()}")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 256)
                if not chunk:
                    break
                buf += chunk
        line = buf.split(b"\n", 1)[0].strip()
        if line == b"ready":
            self.scheduling = procs.scheduling(self.proc.pid)
            return self.proc.pid
        if not buf:
            # stdout closed: linkem is exiting; give it a moment.
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        status = self.proc.poll()
        if status is None:
            self.kill()
            raise BackendError(f"linkem ({self.label}) printed "
                               f"{line.decode(errors='replace')!r} "
                               f"instead of \"ready\"")
        raise BackendError(f"linkem ({self.label}) exited with status "
                           f"{status} before it was ready"
                           f"{self._last_words()}")

    def stderr_text(self, limit=4000):
        """What linkem wrote on stderr (the end of it), or ""."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-limit:]
        except OSError:
            return ""

    def _last_words(self):
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError:
            lines = []
        return f": {lines[-1]}" if lines else ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check(self):
        """Raise BackendError if linkem has died during the run."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BackendError(f"linkem ({self.label}) died with status "
                               f"{self.proc.returncode}{self._last_words()}")

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM, wait, read the stats JSON. Returns the stats or None;
        self.exit_status and self.problem say how it went."""
        self.problem = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.problem = f"linkem ({self.label}) ignored SIGTERM " \
                    f"for {timeout:g} s and was killed"
        elif not self.start_failed:    # that was reported already
            self.problem = f"linkem ({self.label}) had died with status " \
                f"{self.proc.returncode}{self._last_words()}"
        self.proc.stdout.close()
        self.exit_status = self.proc.returncode
        if self.exit_status != 0 and not self.problem and \
                not self.start_failed:
            self.problem = f"linkem ({self.label}) exited with status " \
                f"{self.exit_status}{self._last_words()}"
        try:
            with open(self.stats_path) as f:
                self.stats = json.load(f)
        except (OSError, ValueError) as e:
            if not self.start_failed:
                self.problem = self.problem or \
                    f"linkem ({self.label}) wrote no readable stats: {e}"
            self.stats = None
        return self.stats


def linkem_version(binary):
    try:
        r = subprocess.run([binary, "--version"], capture_output=True,
                           text=True, timeout=5)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None
