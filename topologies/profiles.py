"""Link profiles: one TOML file per profile in topologies/profiles/.

A profile says what one emulated link does to frames, per direction:
serialisation rate (optionally with link-layer framing: overhead per
frame, cells), one-way delay, optional jitter, a loss model (per frame or
per cell) and a drop-tail queue limit, and which links of the dumbbell
carry it. The file
format is documented in topologies/profiles/README.md; this module is its
only reader. Both link backends take the parsed numbers from here, so a
profile means the same thing whichever backend runs it.

Every problem with a file raises ProfileError, whose str() is one line
naming the file, the profile and the field.
"""
import dataclasses
import decimal
import difflib
import hashlib
import math
import os
import re
import tomllib
from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

# Bounds outside which a value is taken for a typo, not a wish.
RATE_MIN_BPS = 1_000                 # 1 kbit/s
RATE_MAX_BPS = 10_000_000_000        # 10 Gbit/s
DELAY_MAX_US = 10_000_000            # 10 s one way
QUEUE_MAX_PACKETS = 100_000
QUEUE_MIN_BYTES = 1514               # one full-size Ethernet frame
QUEUE_MAX_BYTES = 100_000_000
OVERHEAD_MAX_BYTES = 65535           # |packet_overhead|, cell_size
CELL_OVERHEAD_MAX_BYTES = 1000
UNLIMITED = "unlimited"              # rate: no serialisation, no queue

DEFAULT_QUEUE = "1000 packets"       # Linux's txqueuelen, linkem's default
DEFAULT_APPLIES = ("bottleneck",)
APPLIES_CHOICES = ("bottleneck", "access")
LOSS_MODELS = ("bernoulli", "gilbert-elliott")
DIRECTIONS = ("left_to_right", "right_to_left")

# Keys a direction can set, at top level or in a [left_to_right] /
# [right_to_left] table that overrides the top level for that direction.
LINK_KEYS = ("rate", "delay", "jitter", "loss", "loss_model",
             "gilbert_elliott", "queue", "packet_overhead", "cell_size",
             "cell_overhead", "loss_unit")
LOSS_UNITS = ("frame", "cell")
TOP_KEYS = ("description", "applies") + LINK_KEYS + DIRECTIONS
REQUIRED = ("rate", "delay")         # and loss, unless Gilbert-Elliott
GE_KEYS = ("p", "r", "loss_bad", "loss_good")

# A GE file may also state its mean loss; it must agree with the model's
# long-run loss within this relative tolerance.
GE_MEAN_RTOL = 0.05

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
NUM_RE = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(\S*)\s*$")

RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
TIME_UNITS = {"s": 10**6, "ms": 10**3, "us": 1, "\u00b5s": 1}
SIZE_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20}
PACKET_UNITS = ("packet", "packets", "pkt", "pkts")


class ProfileError(Exception):
    """A profile file is unusable; str() is the one-line message."""

    def __init__(self, path, profile, field, message):
        self.path = str(path)
        self.profile = profile
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self):
        where = f"{_show_path(self.path)}: profile \"{self.profile}\""
        if self.field:
            where += f": field \"{self.field}\""
        return f"{where}: {self.message}"


def _show_path(path):
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("../..") else str(path)


class _ValueError(Exception):
    """Internal: a value is wrong; the caller adds file/profile/field."""


@dataclasses.dataclass(frozen=True)
class GilbertElliott:
    """netem's "gemodel p r 1-h 1-k", all as probabilities in [0, 1]."""
    p: float          # P(good -> bad) per frame
    r: float          # P(bad -> good) per frame
    loss_bad: float   # loss probability in the bad state (1-h)
    loss_good: float  # loss probability in the good state (1-k)

    def mean_loss(self):
        """Long-run fraction of frames lost (stationary distribution)."""
        bad = self.p / (self.p + self.r)
        return bad * self.loss_bad + (1.0 - bad) * self.loss_good

    def mean_burst(self):
        """Mean length, in frames, of a run of consecutive losses.

        A frame's fate follows the state it finds; the chain then steps
        (linkem's order). Runs start where a kept frame is followed by a
        lost one: mean run = P(lost) / P(kept, then lost). With
        loss_bad = 100 % and loss_good = 0 % this is 1/r."""
        bad = self.p / (self.p + self.r)
        good = 1.0 - bad
        lb, lg = self.loss_bad, self.loss_good
        # P(kept in state s) x P(next frame lost | state s now)
        nxt_g = (1 - self.p) * lg + self.p * lb
        nxt_b = self.r * lg + (1 - self.r) * lb
        starts = good * (1 - lg) * nxt_g + bad * (1 - lb) * nxt_b
        return self.mean_loss() / starts if starts > 0 else math.inf

    def count_variance(self, n):
        """Asymptotic variance of the number of frames lost out of n.

        Loss indicators are correlated through the hidden state; for the
        two-state chain the lag-k autocovariance is
        pi_g pi_b (loss_bad - loss_good)^2 lambda^k with lambda = 1 - p - r,
        which sums to the factor below. Used for the calibration's
        confidence interval, where a binomial one would be too narrow."""
        m = self.mean_loss()
        bad = self.p / (self.p + self.r)
        lam = 1.0 - self.p - self.r
        cov = bad * (1.0 - bad) * (self.loss_bad - self.loss_good) ** 2
        extra = 2.0 * cov * lam / (1.0 - lam) if lam < 1.0 else 0.0
        return n * max(m * (1.0 - m) + extra, 0.0)


@dataclasses.dataclass(frozen=True)
class Direction:
    """What a link does to frames travelling one way."""
    rate_bps: int            # whole Ethernet frames (header + payload)
    delay_us: int            # one-way propagation delay
    jitter_us: int           # uniform in [-jitter, +jitter], no reordering
    loss_model: str          # "bernoulli" or "gilbert-elliott"
    loss: float              # Bernoulli probability, or GE long-run mean
    ge: GilbertElliott = None
    queue_packets: int = None  # drop-tail limit on waiting frames, or
    queue_bytes: int = None    # on their bytes (exactly one is set)
    packet_overhead: int = 0   # bytes added to every frame for the rate
    cell_size: int = 0         # whole cells of this many bytes (0: none)
    cell_overhead: int = 0     # bytes added to every cell
    loss_per_cell: bool = False

    def framed(self):
        return bool(self.packet_overhead or self.cell_size)

    def cells(self, frame_bytes):
        """Cells a frame of frame_bytes crosses as (1 without cells)."""
        if not self.cell_size:
            return 1
        n = -(-max(0, frame_bytes + self.packet_overhead) //
              self.cell_size)
        return max(1, n)

    def wire_bytes(self, frame_bytes):
        """Bytes the link serialises for an Ethernet frame of
        frame_bytes: with packet_overhead, in whole cells of cell_size +
        cell_overhead bytes when cells are set (netem's and linkem's
        rule)."""
        n = max(0, frame_bytes + self.packet_overhead)
        if not self.cell_size:
            return n
        return -(-n // self.cell_size) * (self.cell_size +
                                          self.cell_overhead)

    def serialisation_us(self, frame_bytes):
        """Time the link takes to send a frame of frame_bytes (0 at an
        unlimited rate)."""
        if not self.rate_bps:
            return 0.0
        return serialisation_us(self.wire_bytes(frame_bytes), self.rate_bps)

    def frame_rate_bps(self, frame_bytes):
        """Ethernet-frame bit rate the link carries when saturated with
        frames of frame_bytes: the rate less the framing overhead."""
        if not self.rate_bps:
            return math.inf
        return self.rate_bps * frame_bytes / self.wire_bytes(frame_bytes)

    def frame_loss(self, frame_bytes):
        """Long-run probability that a frame of frame_bytes is lost: the
        loss, or per cell 1 - (1 - loss)^cells."""
        if not self.loss_per_cell:
            return self.loss
        return 1.0 - (1.0 - self.loss) ** self.cells(frame_bytes)

    def to_dict(self):
        d = {"rate_bps": self.rate_bps, "delay_us": self.delay_us,
             "jitter_us": self.jitter_us, "loss_model": self.loss_model,
             "loss": self.loss}
        if self.ge is not None:
            d["gilbert_elliott"] = dataclasses.asdict(self.ge)
        if self.queue_packets is not None:
            d["queue_packets"] = self.queue_packets
        if self.queue_bytes is not None:
            d["queue_bytes"] = self.queue_bytes
        if self.framed() or self.loss_per_cell:
            d.update(packet_overhead=self.packet_overhead,
                     cell_size=self.cell_size,
                     cell_overhead=self.cell_overhead,
                     loss_unit="cell" if self.loss_per_cell else "frame")
        return d


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    path: str
    description: str
    applies: tuple           # subset of APPLIES_CHOICES, in that order
    left_to_right: Direction
    right_to_left: Direction
    sha256: str

    def direction(self, which):
        return getattr(self, which)

    def symmetric(self):
        return self.left_to_right == self.right_to_left

    def to_dict(self):
        return {"name": self.name, "file": self.path,
                "sha256": self.sha256, "description": self.description,
                "applies": list(self.applies),
                "left_to_right": self.left_to_right.to_dict(),
                "right_to_left": self.right_to_left.to_dict()}


# ---- value parsers --------------------------------------------------------
# Each takes the raw TOML value and returns an exact number or raises
# _ValueError with what is wrong and what a good value looks like.

def _split(value, example):
    if isinstance(value, bool) or not isinstance(value, str):
        kind = type(value).__name__
        raise _ValueError(f"expected a string with a unit such as "
                          f"\"{example}\", got {value!r} ({kind})")
    m = NUM_RE.match(value)
    if not m:
        raise _ValueError(f"cannot read {value!r}; write a number and a "
                          f"unit such as \"{example}\"")
    try:
        num = decimal.Decimal(m.group(1))
    except decimal.InvalidOperation:
        raise _ValueError(f"cannot read the number in {value!r}") from None
    return num, m.group(2)


def _negative(value, num):
    if num < 0:
        raise _ValueError(f"{value!r} is negative")


def parse_rate(value):
    """"30Mbit", "250kbit", "1.5Gbit", "9600bit" (optionally "/s") -> bit/s;
    "unlimited" -> 0 (no serialisation at all).

    Units are decimal (k = 1000) and in bits, as tc writes them; "bps" is
    refused because tc reads it as bytes per second."""
    if value == UNLIMITED:
        return 0
    num, unit = _split(value, "30Mbit")
    _negative(value, num)
    u = unit.lower()
    if u.endswith("/s"):
        u = u[:-2]
    if u.endswith("bps") or u.endswith("b") and u not in RATE_UNITS:
        raise _ValueError(f"unit of {value!r} is ambiguous; write bits per "
                          f"second as bit, kbit, Mbit or Gbit "
                          f"(e.g. \"30Mbit\")")
    if u not in RATE_UNITS:
        raise _ValueError(f"unknown rate unit in {value!r}; use bit, kbit, "
                          f"Mbit or Gbit (e.g. \"250kbit\")")
    bps = num * RATE_UNITS[u]
    if bps != bps.to_integral_value():
        raise _ValueError(f"{value!r} is not a whole number of bit/s")
    bps = int(bps)
    if bps < RATE_MIN_BPS or bps > RATE_MAX_BPS:
        raise _ValueError(f"{value!r} is out of range (1kbit to 10Gbit)")
    return bps


def parse_time(value, what="delay"):
    """"10ms", "500us", "1.5s", "0ms" -> whole microseconds."""
    num, unit = _split(value, "10ms")
    _negative(value, num)
    u = unit.lower() if unit != "\u00b5s" else unit
    if u not in TIME_UNITS:
        hint = " (a unit is required, even for 0)" if unit == "" else ""
        raise _ValueError(f"unknown time unit in {value!r}{hint}; use s, "
                          f"ms or us (e.g. \"10ms\", \"500us\")")
    us = num * TIME_UNITS[u]
    if us != us.to_integral_value():
        raise _ValueError(f"{value!r} is finer than 1us")
    us = int(us)
    if us > DELAY_MAX_US:
        raise _ValueError(f"{value!r} is out of range (at most 10s for "
                          f"a one-way {what})")
    return us


def parse_percent(value, upper_inclusive=True):
    """"2%", "0.25%" -> probability in [0, 1]."""
    num, unit = _split(value, "2%")
    _negative(value, num)
    if unit != "%":
        raise _ValueError(f"write {value!r} as a percentage such as \"2%\"")
    if num > 100 or (num == 100 and not upper_inclusive):
        limit = "100%" if upper_inclusive else "below 100%"
        raise _ValueError(f"{value!r} is out of range (0% to {limit})")
    return float(num / 100)


def parse_queue(value):
    """"100 packets" -> ("packets", 100); "64KiB" -> ("bytes", 65536)."""
    num, unit = _split(value, "100 packets")
    _negative(value, num)
    u = unit.lower()
    if u in PACKET_UNITS:
        if num != num.to_integral_value():
            raise _ValueError(f"{value!r} is not a whole number of packets")
        n = int(num)
        if n < 1 or n > QUEUE_MAX_PACKETS:
            raise _ValueError(f"{value!r} is out of range (1 to "
                              f"{QUEUE_MAX_PACKETS} packets)")
        return "packets", n
    if u in SIZE_UNITS:
        n = num * SIZE_UNITS[u]
        if n != n.to_integral_value():
            raise _ValueError(f"{value!r} is not a whole number of bytes")
        n = int(n)
        if n < QUEUE_MIN_BYTES or n > QUEUE_MAX_BYTES:
            raise _ValueError(f"{value!r} is out of range (1514B, one "
                              f"full frame, to 100MB)")
        return "bytes", n
    raise _ValueError(f"unknown queue unit in {value!r}; use packets or "
                      f"bytes (B, kB, KiB, MB, MiB), e.g. \"100 packets\"")


def parse_bytes(value, lo, hi):
    """"-14B", "104B" -> whole bytes in [lo, hi] (may be negative)."""
    num, unit = _split(value, "104B")
    if unit != "B":
        raise _ValueError(f"write {value!r} in bytes, such as \"104B\"")
    if num != num.to_integral_value():
        raise _ValueError(f"{value!r} is not a whole number of bytes")
    n = int(num)
    if not lo <= n <= hi:
        raise _ValueError(f"{value!r} is out of range ({lo}B to {hi}B)")
    return n


# ---- file reading ---------------------------------------------------------

def _unknown(key, known):
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean \"{close[0]}\"?" if close else \
        f" (known: {', '.join(known)})"
    return f"unknown field{hint}"


def _syntax_field(text, message):
    """Best guess at the key on the line a TOML error points to."""
    m = re.search(r"at line (\d+)", message)
    if not m:
        return None
    lines = text.splitlines()
    n = int(m.group(1))
    if 1 <= n <= len(lines):
        k = re.match(r"\s*\[*\s*([A-Za-z0-9_.-]+)", lines[n - 1])
        if k:
            return k.group(1)
    return None


def _direction(raw, err, prefix):
    """Build one Direction from merged raw keys; err(field, msg) raises."""
    def field(key, parse, *args):
        try:
            return parse(raw[key], *args)
        except _ValueError as e:
            err(prefix + key, str(e))

    for key in REQUIRED:
        if key not in raw:
            err(prefix + key, "missing (every profile needs rate, delay "
                "and loss)")
    rate = field("rate", parse_rate)
    delay = field("delay", parse_time, "delay")
    jitter = field("jitter", parse_time, "jitter") if "jitter" in raw else 0
    if jitter > delay:
        err(prefix + "jitter", f"{raw['jitter']!r} exceeds the delay "
            f"{raw['delay']!r}; the delay would go negative")

    model = raw.get("loss_model", "bernoulli")
    if model not in LOSS_MODELS:
        err(prefix + "loss_model", f"{model!r} is not a loss model; use "
            f"\"bernoulli\" or \"gilbert-elliott\"")
    ge = None
    if model == "bernoulli":
        if "loss" not in raw:
            err(prefix + "loss", "missing (every profile needs rate, delay "
                "and loss)")
        if "gilbert_elliott" in raw:
            err(prefix + "gilbert_elliott", "given but loss_model is "
                "\"bernoulli\"; set loss_model = \"gilbert-elliott\" or "
                "remove the table")
        loss = field("loss", parse_percent, False)
    else:
        table = raw.get("gilbert_elliott")
        gp = prefix + "gilbert_elliott"
        if not isinstance(table, dict):
            err(gp, "missing: loss_model \"gilbert-elliott\" needs a "
                "[gilbert_elliott] table with p, r, loss_bad, loss_good")
        for key in table:
            if key not in GE_KEYS:
                err(f"{gp}.{key}", _unknown(key, GE_KEYS))
        vals = {}
        for key in GE_KEYS:
            if key not in table:
                err(f"{gp}.{key}", "missing (Gilbert-Elliott needs p, r, "
                    "loss_bad and loss_good)")
            try:
                vals[key] = parse_percent(table[key])
            except _ValueError as e:
                err(f"{gp}.{key}", str(e))
        for key in ("p", "r"):
            if vals[key] == 0:
                err(f"{gp}.{key}", "must be above 0% (the chain would "
                    "never change state)")
        ge = GilbertElliott(**vals)
        loss = ge.mean_loss()
        if loss >= 1.0:
            err(gp, "loses every frame in the long run")
        if "loss" in raw:
            stated = field("loss", parse_percent, False)
            if abs(stated - loss) > GE_MEAN_RTOL * max(loss, 1e-12):
                err(prefix + "loss", f"{raw['loss']!r} disagrees with the "
                    f"Gilbert-Elliott parameters, whose long-run loss is "
                    f"{loss * 100:.4g}%; fix one or remove loss")

    kind, n = field("queue", parse_queue) if "queue" in raw else \
        parse_queue(DEFAULT_QUEUE)

    over = field("packet_overhead", parse_bytes, -OVERHEAD_MAX_BYTES,
                 OVERHEAD_MAX_BYTES) if "packet_overhead" in raw else 0
    cell = field("cell_size", parse_bytes, 1, OVERHEAD_MAX_BYTES) \
        if "cell_size" in raw else 0
    cover = 0
    if "cell_overhead" in raw:
        if not cell:
            err(prefix + "cell_overhead", "given without cell_size; set "
                "cell_size too or remove it")
        cover = field("cell_overhead", parse_bytes, -cell + 1,
                      CELL_OVERHEAD_MAX_BYTES)
    unit = raw.get("loss_unit", "frame")
    if unit not in LOSS_UNITS:
        err(prefix + "loss_unit", f"{unit!r} is not a loss unit; use "
            f"\"frame\" or \"cell\"")
    if unit == "cell":
        if not cell:
            err(prefix + "loss_unit", "\"cell\" needs cell_size (the "
                "loss model then draws once per cell)")
        if model != "bernoulli":
            err(prefix + "loss_unit", "\"cell\" works with loss_model "
                "\"bernoulli\" only")
    if rate == 0 and (over or cell):
        err(prefix + "rate", "\"unlimited\" sends nothing to count "
            "packet_overhead or cells against; give a rate or remove them")
    return Direction(rate_bps=rate, delay_us=delay, jitter_us=jitter,
                     loss_model=model, loss=loss, ge=ge,
                     queue_packets=n if kind == "packets" else None,
                     queue_bytes=n if kind == "bytes" else None,
                     packet_overhead=over, cell_size=cell,
                     cell_overhead=cover, loss_per_cell=unit == "cell")


def parse_profile(text, path, name):
    """Parse the TOML text of one profile; raises ProfileError."""
    def err(field, msg):
        raise ProfileError(path, name, field, msg)

    if not NAME_RE.match(name):
        err(None, "file name must be letters, digits, '-' or '_' before "
            ".toml")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        err(_syntax_field(text, msg), f"TOML syntax error: {msg}")
    for key in raw:
        if key not in TOP_KEYS:
            err(key, _unknown(key, TOP_KEYS))

    desc = raw.get("description", "")
    if not isinstance(desc, str):
        err("description", "expected a string")
    applies = raw.get("applies", list(DEFAULT_APPLIES))
    if isinstance(applies, str):
        applies = [applies]
    if not isinstance(applies, list) or not applies or \
            not all(isinstance(a, str) for a in applies):
        err("applies", "expected a list such as [\"bottleneck\"] or "
            "[\"bottleneck\", \"access\"]")
    for a in applies:
        if a not in APPLIES_CHOICES:
            err("applies", f"{a!r} is not a link of the dumbbell; use "
                f"\"bottleneck\" and/or \"access\"")
    applies = tuple(a for a in APPLIES_CHOICES if a in applies)

    base = {k: raw[k] for k in LINK_KEYS if k in raw}
    dirs = {}
    for d in DIRECTIONS:
        over = raw.get(d, {})
        if not isinstance(over, dict):
            err(d, "expected a table [" + d + "] of overrides")
        for key in over:
            if key not in LINK_KEYS:
                err(f"{d}.{key}", _unknown(key, LINK_KEYS))
        merged = dict(base)
        merged.update(over)
        # An overridden field is reported under the table that set it.
        fields = {k: (f"{d}." if k in over else "") for k in LINK_KEYS}

        def derr(field, msg, fields=fields):
            key = field.split(".", 1)[0]
            err(fields.get(key, "") + field, msg)
        dirs[d] = _direction(merged, derr, "")

    digest = hashlib.sha256(text.encode()).hexdigest()
    return Profile(name=name, path=str(path), description=desc,
                   applies=applies, left_to_right=dirs["left_to_right"],
                   right_to_left=dirs["right_to_left"], sha256=digest)


def load_file(path):
    """Load one profile file; raises ProfileError."""
    path = Path(path)
    name = path.stem
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ProfileError(path, name, None,
                           f"cannot read: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(path, name, None, "not UTF-8 text") from None
    return parse_profile(text, path, name)


def profile_names(directory=PROFILE_DIR):
    """Names of the profiles in a directory, sorted."""
    return sorted(p.stem for p in Path(directory).glob("*.toml"))


def load_profile(spec, directory=PROFILE_DIR):
    """A profile by name (a file in directory) or by path to a .toml file."""
    if isinstance(spec, Profile):
        return spec
    spec = str(spec)
    if spec.endswith(".toml") or os.sep in spec:
        return load_file(spec)
    path = Path(directory) / f"{spec}.toml"
    if not path.exists():
        known = ", ".join(profile_names(directory)) or "none"
        raise ProfileError(path, spec, None,
                           f"no such profile (known: {known}; a profile "
                           f"is a file {Path(directory)}/NAME.toml)")
    return load_file(path)


def load_all(directory=PROFILE_DIR):
    """Every profile in a directory, by name; the first bad file raises."""
    return {n: load_file(Path(directory) / f"{n}.toml")
            for n in profile_names(directory)}


def serialisation_us(frame_bytes, rate_bps):
    """Time to clock frame_bytes onto a link of rate_bps, in microseconds
    (0 at an unlimited rate, rate_bps 0)."""
    return frame_bytes * 8 * 1e6 / rate_bps if rate_bps else 0.0


def frames_in_flight(rate_bps, seconds, frame_bytes):
    """Whole frames of frame_bytes the link holds over `seconds`, rounded
    up: what a delay line must store at full rate."""
    return math.ceil(rate_bps * seconds / (8 * frame_bytes))
