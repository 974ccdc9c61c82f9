"""What a profile should measure as between l1 and r1, and the checks.

One place for the expected values and the tolerances, shared by the
calibration (scripts/calibrate.py) and the topology tests, so both judge
the emulation by the same rules:

  RTT      the median of small pings is within max(0.5 ms, 3 %) of the
           sum, over every shaped link on the path and both directions,
           of the one-way delay plus the ping frame's serialisation time
           (a 98-byte frame takes 3.1 ms at 250 kbit/s).
  rate     the UDP delivery rate under overload, counted in whole
           Ethernet frames as the link counts them, is within 3 % of
           what the path delivers: each link's rate thinned by the loss
           of every link after it (a link's own loss acts before its
           queue, so a saturated link still sends at its full rate), the
           smallest of these over the path.
  loss     the number of datagrams lost out of n sent below the link
           rate is inside the central 95 % interval of what the loss
           model gives for n frames: exact binomial quantiles for
           Bernoulli loss, a normal interval with the Markov-chain
           variance for Gilbert-Elliott (its losses come in bursts, so a
           binomial interval would be too narrow).
"""
import math

from .profiles import serialisation_us

RTT_ABS_MS = 0.5
RTT_REL = 0.03
RATE_REL = 0.03
CONFIDENCE = 0.95

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


class PathModel:
    """The shaped links a frame from l1 to r1 crosses, in order."""

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

    def rtt_ms(self, frame_bytes):
        """Round trip of a frame_bytes request l1->r1 and an equal reply."""
        us = 0.0
        for d in self.l2r + self.r2l:
            us += d.delay_us + serialisation_us(frame_bytes, d.rate_bps)
        return us / 1000.0

    def rate_bps(self, direction="left_to_right"):
        """The narrowest link's rate: load below this reaches no queue."""
        dirs = self.l2r if direction == "left_to_right" else self.r2l
        return min(d.rate_bps for d in dirs)

    def delivered_rate_bps(self, direction="left_to_right"):
        """Frame rate arriving at the far host when the path is overloaded:
        min over hops i of rate_i x product over later hops j of
        (1 - loss_j). A hop's own loss drops frames as they arrive,
        before its queue, so a saturated hop still sends at its rate; the
        hops after it then lose their share of that. (Long-run loss for
        Gilbert-Elliott.)"""
        dirs = self.l2r if direction == "left_to_right" else self.r2l
        best = None
        for i, d in enumerate(dirs):
            r = float(d.rate_bps)
            for later in dirs[i + 1:]:
                r *= 1.0 - later.loss
            best = r if best is None else min(best, r)
        return best

    def loss(self, direction="left_to_right"):
        """Long-run probability that a frame l1->r1 is lost."""
        dirs = self.l2r if direction == "left_to_right" else self.r2l
        keep = 1.0
        for d in dirs:
            keep *= 1.0 - d.loss
        return 1.0 - keep

    def loss_interval(self, n, direction="left_to_right",
                      confidence=CONFIDENCE):
        """(lo, hi): central `confidence` interval of frames lost of n."""
        dirs = self.l2r if direction == "left_to_right" else self.r2l
        if all(d.loss_model == "bernoulli" for d in dirs):
            return binomial_interval(n, self.loss(direction), confidence)
        var = 0.0
        for d in dirs:
            var += d.ge.count_variance(n) if d.ge else \
                n * d.loss * (1.0 - d.loss)
        mean = n * self.loss(direction)
        z = normal_quantile(0.5 + confidence / 2)
        half = z * math.sqrt(var)
        return max(0, math.floor(mean - half)), min(n, math.ceil(mean + half))


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
