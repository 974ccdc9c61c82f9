"""What a profile should measure as between two hosts, and the judges.

One place for the expected values, the tolerances and the pass/fail
rules, shared by the calibration (scripts/calibrate.py) and the topology
tests, so both judge the emulation the same way. Each judge takes plain
numbers (what was measured, what was configured) and returns a dict with
"pass" and, when it fails, "why": one line. The unit tests feed them
deliberately broken links.

  RTT      small pings on an idle link. Expected: the sum, over every
           shaped link on the path and both directions, of the one-way
           delay plus the ping frame's serialisation time (with the
           link's framing). The median must lie within max(0.5 ms, 1 %)
           of it; the 99th percentile may exceed it by the path's jitter
           plus max(1 ms, 2 %) and no more (a link that is late now and
           then passes the median, not this); no ping may come back
           sooner than the emulated part allows.
  rate     the UDP delivery rate under overload, counted in whole
           Ethernet frames as the link counts them, within 1 % of what
           the path delivers: each link's frame rate (the rate less its
           framing overhead for that frame size) thinned by the loss of
           every link after it, the smallest of these. Both directions.
  loss     the datagrams lost out of n sent below the rate lie inside the
           central 99.9 % interval of the loss model for n frames: exact
           binomial for Bernoulli loss (per cell: 1 - (1 - p)^cells per
           frame), a normal interval with the Markov chain's variance for
           Gilbert-Elliott. Both directions. 99.9 %, not 95 %: a
           calibration makes some thirty such checks, and at 95 % each a
           correct emulator would fail one in most runs.
  bursts   Gilbert-Elliott only: the mean length of runs of consecutive
           losses against the chain's (1/r when the bad state loses
           everything and the good one nothing), within the 99.9 %
           normal interval for the number of runs seen.
  queue    a burst of full-size frames into the idle link, with the
           profile's own queue: the link holds the frame in transmission
           and `queue` frames, plus those that began transmission while
           the burst was still arriving; the largest queueing delay a
           frame saw is between (queue - 1) and queue serialisation
           times (within max(0.3 ms, 3 %)); every frame that did not
           arrive is one the emulator counted as dropped, and some were.
  timing   the emulator's timing error p99 (how late it sent frames
           against their schedule) below TIMING_ERROR_P99_LIMIT_US, on
           every link and direction that carried at least
           contention.MIN_FRAMES frames.
"""
import math

from .contention import TIMING_ERROR_P99_LIMIT_US

RTT_ABS_MS = 0.5
RTT_REL = 0.01
RTT_P99_ABS_MS = 1.0
RTT_P99_REL = 0.02
RTT_EARLY_MS = 0.05      # ping's own resolution: nothing arrives earlier
RATE_REL = 0.01
CONFIDENCE = 0.999
QUEUE_ABS_US = 300.0
QUEUE_REL = 0.03
MTU_FRAME = 1514

ETH_HEADER = 14
IPV4_HEADER = 20
UDP_HEADER = 8
ICMP_HEADER = 8
UDP_FRAME_OVERHEAD = UDP_HEADER + IPV4_HEADER + ETH_HEADER     # 42
PING_FRAME_OVERHEAD = ICMP_HEADER + IPV4_HEADER + ETH_HEADER   # 42


def ping_frame_bytes(payload=56):
    """Ethernet frame of `ping -s payload` (56 -> 98 bytes)."""
    return payload + PING_FRAME_OVERHEAD


def udp_frame_bytes(payload):
    return payload + UDP_FRAME_OVERHEAD


def frame_rate(payload_bps, payload):
    """iperf3's payload bit rate as the link's frame bit rate."""
    return payload_bps * udp_frame_bytes(payload) / payload


DIRECTIONS = ("left_to_right", "right_to_left")


class PathModel:
    """The shaped links a frame crosses between l1 and r1, in order (for
    right_to_left: from r1's side, in the order that direction crosses
    them)."""

    def __init__(self, profile):
        self.profile = profile
        hops = []
        if "access" in profile.applies:
            hops.append("access-l1")
        if "bottleneck" in profile.applies:
            hops.append("bottleneck")
        if "access" in profile.applies:
            hops.append("access-r1")
        self.hops = hops
        self.l2r = [profile.left_to_right] * len(hops)
        self.r2l = [profile.right_to_left] * len(hops)

    def dirs(self, direction="left_to_right"):
        """The Directions a frame going `direction` crosses, in order."""
        return self.l2r if direction == "left_to_right" else self.r2l

    def rtt_ms(self, frame_bytes):
        """Round trip of a frame_bytes request l1->r1 and an equal reply."""
        us = 0.0
        for d in self.l2r + self.r2l:
            us += d.delay_us + d.serialisation_us(frame_bytes)
        return us / 1000.0

    def jitter_ms(self):
        """How far jitter can move a round trip, at most."""
        return sum(d.jitter_us for d in self.l2r + self.r2l) / 1000.0

    def limited(self, direction="left_to_right"):
        """True if some link on the path has a rate (not unlimited)."""
        return any(d.rate_bps for d in self.dirs(direction))

    def rate_bps(self, direction="left_to_right", frame_bytes=MTU_FRAME):
        """The narrowest link's frame rate for frames of frame_bytes:
        load below this reaches no queue (inf if nothing is limited)."""
        return min(d.frame_rate_bps(frame_bytes)
                   for d in self.dirs(direction))

    def delivered_rate_bps(self, direction="left_to_right",
                           frame_bytes=MTU_FRAME):
        """Frame rate arriving at the far host when the path is overloaded
        with frames of frame_bytes: min over hops i of rate_i x product
        over later hops j of (1 - loss_j). A hop's own loss drops frames
        as they arrive, before its queue, so a saturated hop still sends
        at its rate; the hops after it then lose their share of that.
        (Long-run loss for Gilbert-Elliott; the rate less the framing's
        overhead.)"""
        dirs = self.dirs(direction)
        best = None
        for i, d in enumerate(dirs):
            r = d.frame_rate_bps(frame_bytes)
            for later in dirs[i + 1:]:
                r *= 1.0 - later.frame_loss(frame_bytes)
            best = r if best is None else min(best, r)
        return best

    def loss(self, direction="left_to_right", frame_bytes=MTU_FRAME):
        """Long-run probability that a frame of frame_bytes is lost."""
        keep = 1.0
        for d in self.dirs(direction):
            keep *= 1.0 - d.frame_loss(frame_bytes)
        return 1.0 - keep

    def loss_interval(self, n, direction="left_to_right",
                      frame_bytes=MTU_FRAME, confidence=CONFIDENCE):
        """(lo, hi): central `confidence` interval of frames lost of n."""
        dirs = self.dirs(direction)
        if all(d.loss_model == "bernoulli" for d in dirs):
            return binomial_interval(n, self.loss(direction, frame_bytes),
                                     confidence)
        var = 0.0
        for d in dirs:
            p = d.frame_loss(frame_bytes)
            var += d.ge.count_variance(n) if d.ge else n * p * (1.0 - p)
        mean = n * self.loss(direction, frame_bytes)
        z = normal_quantile(0.5 + confidence / 2)
        half = z * math.sqrt(var)
        return max(0, math.floor(mean - half)), min(n, math.ceil(mean + half))

    def burst_model(self, direction="left_to_right"):
        """The Gilbert-Elliott chain whose burst length a measurement can
        be judged against: the path's only lossy link, if it loses per
        frame by Gilbert-Elliott; else None."""
        lossy = [d for d in self.dirs(direction) if d.loss > 0]
        if len(lossy) != 1 or lossy[0].loss_model != "gilbert-elliott" or \
                lossy[0].loss_per_cell:
            return None
        return lossy[0].ge

    def queue_link(self, direction="left_to_right"):
        """The one rate-limited link a burst queues at, or None (no rate,
        or several links: then the burst queues at each, and the queue
        test does not apply)."""
        limited = [d for d in self.dirs(direction) if d.rate_bps]
        return limited[0] if len(limited) == 1 else None


def queue_frames(d, frame_bytes=MTU_FRAME):
    """Frames of frame_bytes that Direction d's queue holds waiting: its
    packet limit, or as many as its byte limit takes (linkem's rule)."""
    if d.queue_packets is not None:
        return d.queue_packets
    return d.queue_bytes // frame_bytes


def fail(result, why):
    result["pass"] = False
    result["why"] = why
    return result


def judge_rtt(rtts_ms, expected_ms, jitter_ms=0.0):
    """Ping round trips (ms, those that came back) against the expected
    round trip: median, 99th percentile, and none earlier than possible."""
    if not rtts_ms:
        return {"pass": False, "why": "no ping came back"}
    p50, p99 = percentile(rtts_ms, 50), percentile(rtts_ms, 99)
    tol50 = max(RTT_ABS_MS, RTT_REL * expected_ms)
    tol99 = jitter_ms + max(RTT_P99_ABS_MS, RTT_P99_REL * expected_ms)
    r = {"expected_ms": expected_ms, "p50_ms": p50, "p99_ms": p99,
         "min_ms": min(rtts_ms), "tolerance_p50_ms": tol50,
         "limit_p99_ms": expected_ms + tol99, "n": len(rtts_ms),
         "pass": True}
    if abs(p50 - expected_ms) > tol50:
        return fail(r, f"RTT median {p50:.3f} ms, expected {expected_ms:.3f}"
                    f" +- {tol50:.3f} ms")
    if p99 > expected_ms + tol99:
        return fail(r, f"RTT p99 {p99:.3f} ms exceeds {expected_ms:.3f} + "
                    f"{tol99:.3f} ms: the link is late now and then")
    if min(rtts_ms) < expected_ms - jitter_ms - RTT_EARLY_MS:
        return fail(r, f"a ping came back in {min(rtts_ms):.3f} ms, sooner "
                    f"than the emulated {expected_ms:.3f} ms allow")
    return r


def judge_rate(measured_bps, expected_bps):
    """A delivered frame rate against the path's, within RATE_REL."""
    r = {"expected_bps": expected_bps, "measured_bps": measured_bps,
         "tolerance_bps": RATE_REL * expected_bps, "pass": True}
    if not within_rate(measured_bps, expected_bps):
        return fail(r, f"delivered {measured_bps / 1e6:.5g} Mbit/s of "
                    f"frames, expected {expected_bps / 1e6:.5g} +- "
                    f"{RATE_REL * 100:g} %")
    return r


def judge_loss(n, lost, interval, expected):
    """Frames lost of n against the model's interval (lo, hi)."""
    lo, hi = interval
    r = {"expected": expected, "datagrams": n, "lost": lost,
         "measured": lost / n if n else None, "interval_lost": [lo, hi],
         "interval": [lo / n, hi / n] if n else None,
         "confidence": CONFIDENCE, "pass": True}
    if n <= 0:
        return fail(r, "no datagram was sent")
    if not lo <= lost <= hi:
        return fail(r, f"{lost} of {n} lost ({lost / n * 100:.3g} %), "
                    f"outside the {CONFIDENCE * 100:g} % interval "
                    f"{lo}-{hi} of {expected * 100:.3g} % loss")
    return r


def judge_bursts(bursts, lost_frames, ge, confidence=CONFIDENCE):
    """The mean run of consecutive losses (lost_frames / bursts runs)
    against the Gilbert-Elliott chain's (GilbertElliott.mean_burst): a
    normal interval for the mean of `bursts` run lengths, whose spread is
    taken as geometric's (variance m^2 - m), exact for the classic model
    (all lost in bad, none in good)."""
    m = ge.mean_burst()
    r = {"expected_mean": m, "bursts": bursts, "lost": lost_frames,
         "measured_mean": lost_frames / bursts if bursts else None,
         "confidence": confidence, "pass": True}
    if bursts < 10:
        return fail(r, f"only {bursts} loss bursts: too few to judge "
                    f"their length")
    half = normal_quantile(0.5 + confidence / 2) * \
        math.sqrt(max(m * m - m, 0.0) / bursts)
    r["interval"] = [m - half, m + half]
    if abs(r["measured_mean"] - m) > half:
        return fail(r, f"losses come in runs of {r['measured_mean']:.2f} "
                    f"frames on average, expected {m:.2f} +- {half:.2f} "
                    f"(1/r for the classic model)")
    return r


def expected_queue(d, frame_bytes=MTU_FRAME):
    """What a burst of frame_bytes frames into Direction d's idle link
    must show: (frames held waiting, serialisation time in us)."""
    return queue_frames(d, frame_bytes), d.serialisation_us(frame_bytes)


def judge_queue(d, burst, frame_bytes=MTU_FRAME, counted=None):
    """A burst into the idle link of Direction d, with its own queue.

    burst: {"sent", "received", "burst_us" (first to last send),
    "owd_min_us", "owd_max_us"}: the largest queueing delay any frame saw
    is owd_max - owd_min (the first frame found the link idle). counted:
    the emulator's {"dropped_queue", "dropped_loss"} for this burst, or
    None where it does not count them (netem's counters are not read)."""
    q, ser = expected_queue(d, frame_bytes)
    started = math.ceil(burst["burst_us"] / ser) if ser else 0
    lo_frames, hi_frames = q + 1, q + 2 + started
    qdelay = burst["owd_max_us"] - burst["owd_min_us"]
    tol = max(QUEUE_ABS_US, QUEUE_REL * q * ser) + 2 * d.jitter_us
    r = {"queue_frames": q, "serialisation_us": ser,
         "expected_max_queue_delay_us": [(q - 1) * ser, q * ser],
         "tolerance_us": tol, "max_queue_delay_us": qdelay,
         "sent": burst["sent"], "received": burst["received"],
         "expected_received": [lo_frames, hi_frames],
         "started_during_burst": started, "burst_us": burst["burst_us"],
         "counted": counted, "pass": True}
    if not (q - 1) * ser - tol <= qdelay <= q * ser + tol:
        return fail(r, f"largest queueing delay {qdelay / 1e3:.3f} ms, "
                    f"expected {(q - 1) * ser / 1e3:.3f}-"
                    f"{q * ser / 1e3:.3f} ms for a queue of {q} frames")
    if not lo_frames <= burst["received"] <= hi_frames:
        return fail(r, f"the link passed {burst['received']} frames of a "
                    f"burst of {burst['sent']}, expected {lo_frames}-"
                    f"{hi_frames} for a queue of {q} frames")
    if counted is not None:
        missing = burst["sent"] - burst["received"]
        dropped = counted["dropped_queue"] + counted["dropped_loss"]
        if dropped != missing or not counted["dropped_queue"]:
            return fail(r, f"{missing} frames of the burst did not arrive "
                        f"but the emulator counted {dropped} drops "
                        f"({counted['dropped_queue']} by the queue)")
    return r


def judge_timing(errors, limit_us=TIMING_ERROR_P99_LIMIT_US):
    """errors: {label: {direction: timing error p99 us}} (contention.
    timing_errors); every one must be below limit_us."""
    worst = max((v, lab, d) for lab, dirs in errors.items()
                for d, v in dirs.items()) if errors else None
    r = {"limit_us": limit_us, "p99_us": errors,
         "worst_us": worst[0] if worst else None, "pass": True}
    if worst and worst[0] > limit_us:
        return fail(r, f"the emulator's timing error p99 was "
                    f"{worst[0]:.0f} us on {worst[1]} {worst[2]} (limit "
                    f"{limit_us:g} us): frames left late")
    return r


def percentile(xs, q):
    """Nearest-rank percentile of a non-empty list (rank ceil(q/100 n))."""
    s = sorted(xs)
    k = max(1, math.ceil(q / 100 * len(s)))
    return s[k - 1]


def within_rtt(measured_ms, expected_ms):
    return abs(measured_ms - expected_ms) <= rtt_tolerance_ms(expected_ms)


def rtt_tolerance_ms(expected_ms):
    return max(RTT_ABS_MS, RTT_REL * expected_ms)


def within_rate(measured_bps, expected_bps):
    return abs(measured_bps - expected_bps) <= RATE_REL * expected_bps


def binomial_interval(n, p, confidence=CONFIDENCE):
    """(lo, hi) with P(X < lo) <= a/2 and P(X > hi) <= a/2 for
    X ~ Binomial(n, p), a = 1 - confidence: exact, from the pmf."""
    if n <= 0:
        return 0, 0
    if p <= 0.0:
        return 0, 0
    if p >= 1.0:
        return n, n
    a = (1.0 - confidence) / 2
    lp, lq = math.log(p), math.log1p(-p)
    lgn = math.lgamma(n + 1)
    # Only the region around the mean carries probability worth summing.
    sd = math.sqrt(n * p * (1 - p))
    k0 = max(0, int(n * p - 12 * sd - 10))
    k1 = min(n, int(n * p + 12 * sd + 10))
    below = 0.0           # P(X < k0) is negligible by construction
    lo = hi = None
    for k in range(k0, k1 + 1):
        pk = math.exp(lgn - math.lgamma(k + 1) - math.lgamma(n - k + 1) +
                      k * lp + (n - k) * lq)
        if lo is None and below + pk > a:
            lo = k       # P(X < k) = below <= a
        below += pk
        if hi is None and below >= 1.0 - a:
            hi = k       # P(X > k) = 1 - below <= a
            break
    return lo if lo is not None else k0, hi if hi is not None else k1


def normal_quantile(q):
    """Inverse of the standard normal CDF, by bisection on erf (60 halvings
    of [-40, 40] leave an error far below what interval bounds need)."""
    if not 0.0 < q < 1.0:
        raise ValueError("quantile must be in (0, 1)")
    lo, hi = -40.0, 40.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
