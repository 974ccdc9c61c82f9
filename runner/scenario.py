"""Scenarios: scenarios/NAME.toml, read and checked here, turned into the
processes of one cell.

A scenario names roles (publishers and subscribers), the dumbbell host
each runs on, and what it does; the broker always runs on r1. The file
format is documented in scenarios/README.md; this module is its only
reader. Every problem with a file raises ScenarioError, whose str() is one
line naming the file and the field.
"""
import copy
import dataclasses
import difflib
import itertools
import os
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from scripts import reconcile  # noqa: E402
from topologies.profiles import NAME_RE  # noqa: E402

from .transports import NAMES as TRANSPORT_NAMES  # noqa: E402
SCENARIO_DIR = REPO / "scenarios"
HOST_RE = re.compile(r"^([lr])(\d{1,2})$")
BROKER_HOST = "r1"
DEFAULT_HOSTS = 5
DEFAULT_DRAIN_S = 3.0
HEADER_BYTES = 28           # loadgen's benchmark header: the smallest payload

DUR_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m)\s*$")
DUR_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}

# field: (kind, loadgen/sink option or None, default)
# kinds: int, float, str, bool, dur (string with unit), qos, mqtt, list
PUBLISHER_FIELDS = {
    "host": ("host", None, None),
    "description": ("str", None, ""),
    "clients": ("int", "--clients", 1),
    "flows": ("int", "--flows", None),
    "streams": ("int", "--streams", None),
    "topic": ("topic", "--topic", None),
    "size": ("size", "--size", 64),
    "qos": ("qos", "--qos", None),
    "mqtt": ("mqtt", "--mqtt", None),
    "rate": ("rate", "--rate", 10.0),
    "arrival": ("arrival", "--arrival", "constant"),
    "count": ("int", "--count", None),
    "duration": ("dur", "--duration", None),
    "idle": ("bool", "--idle", False),
    "hold": ("dur", None, 0.0),
    "ramp_up": ("dur", "--ramp-up", None),
    "max_pending": ("int", "--max-pending", None),
    "inflight": ("int", "--inflight", None),
    "keepalive": ("int", "--keepalive", None),
    "persistent": ("bool", "--persistent", False),
    "cycles": ("int", "--cycles", None),
    "sleep": ("dur", "--sleep", None),
    "early_data": ("bool", "--early-data", False),
    "migrate_after": ("int", "--migrate-after", None),
    "repeat": ("int", None, 1),
    "pause": ("dur", None, 0.0),
    "options": ("list", None, []),
    "transports": ("transports", None, None),
    "when": ("when", None, None),
}
SUBSCRIBER_FIELDS = {
    "host": ("host", None, None),
    "description": ("str", None, ""),
    "topics": ("filters", "--topic", None),
    "qos": ("qos", "--qos", None),
    "mqtt": ("mqtt", "--mqtt", None),
    "coalesce": ("dur", "--coalesce", None),
    "raw": ("bool", None, False),
    "options": ("list", None, []),
    "transports": ("transports", None, None),
    "when": ("when", None, None),
}
REQUIRED = {"publisher": ("host", "topic"), "subscriber": ("host", "topics")}
TOP_KEYS = ("name", "description", "hosts", "mqtt", "qos", "profiles",
            "transports", "drain", "broker", "link", "publisher",
            "subscriber", "sweep", "needs", "figures")
SWEEP_KEYS = ("name", "values", "set", "only")
LINK_FIELDS = ("rate", "delay", "jitter", "loss", "queue")


class ScenarioError(Exception):
    def __init__(self, path, field, message):
        self.path, self.field, self.message = path, field, message
        super().__init__(str(self))

    def __str__(self):
        where = f"{self.path}" + (f": {self.field}" if self.field else "")
        return f"{where}: {self.message}"


def parse_duration(value):
    """"10s", "500ms", "200us", "1m" -> seconds (float); ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string with a unit such as \"10s\" "
                         f"or \"500ms\", got {value!r}")
    m = DUR_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration (a number and one "
                         f"of us, ms, s, m: \"500ms\")")
    return float(m.group(1)) * DUR_UNITS[m.group(2)]


def fmt_duration(seconds):
    return f"{seconds:g}s"


# MQTT topic matching: the one in scripts/reconcile.py
topic_matches = reconcile.topic_matches


def valid_filter(f):
    if not f or "\0" in f:
        return False
    levels = f.split("/")
    for i, lv in enumerate(levels):
        if "#" in lv and (lv != "#" or i != len(levels) - 1):
            return False
        if "+" in lv and lv != "+":
            return False
    return True


def _suggest(key, known):
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field{hint}; known: {', '.join(known)}"


@dataclasses.dataclass
class Role:
    kind: str                    # "publisher" or "subscriber"
    name: str
    f: dict                      # validated fields

    @property
    def host(self):
        return self.f["host"]

    def applies_to(self, transport):
        t = self.f.get("transports")
        return t is None or transport in t

    def topics(self):
        """Concrete topics of a publisher's clients and flows: {n} is the
        client's index, {f} the flow's (loadgen --flows)."""
        return [self.f["topic"].replace("{n}", str(n)).replace("{f}", str(f))
                for n in range(self.f["clients"])
                for f in range(self.f.get("flows") or 1)]

    def messages_per_client(self):
        """Messages each client publishes per process (all its cycles),
        or None when the scenario does not fix it (duration, idle)."""
        if self.f.get("idle"):
            return 0
        if self.f.get("count") is None:
            return None
        return self.f["count"] * (self.f.get("cycles") or 1)

    def processes(self):
        return self.f.get("repeat", 1)


@dataclasses.dataclass
class Scenario:
    name: str
    path: str
    description: str
    hosts: int
    drain_s: float
    profiles: list               # default profiles, or None (all)
    transports: list             # default transports, or None (all)
    broker: dict                 # Mosquitto setting overrides
    link: dict                   # profile field overrides
    publishers: list
    subscribers: list
    sweeps: list                 # [{"name", "values", "set", "only"}]
    needs: list
    raw: dict                    # the file as read (for variants)
    text: str

    def variants(self):
        """Every combination of the sweeps' values: a list of
        (label, {sweep name: value}); one unnamed variant without
        sweeps."""
        if not self.sweeps:
            return [("", {})]
        out = []
        for combo in itertools.product(*[s["values"] for s in
                                         self.sweeps]):
            vals = {s["name"]: v for s, v in zip(self.sweeps, combo)}
            label = ",".join(f"{k}={v}" for k, v in vals.items())
            out.append((label, vals))
        return out

    def variant_allows(self, values, transport):
        for s in self.sweeps:
            only = s.get("only") or {}
            allowed = only.get(str(values.get(s["name"])))
            if allowed is not None and transport not in allowed:
                return False
        return True

    def apply(self, values):
        """The scenario with one variant's sweep values set in place."""
        if not values:
            return self
        raw = copy.deepcopy(self.raw)
        for s in self.sweeps:
            v = values[s["name"]]
            for target in s["set"]:
                parts = target.split(".")
                if parts[0] in ("link", "broker"):
                    raw.setdefault(parts[0], {})[parts[1]] = v
                else:
                    kind, role, field = parts
                    for r in raw.get(kind, []):
                        if r.get("name") == role:
                            r[field] = v
                    # "{sweep}" in a role's raw options is replaced too
        for kind in ("publisher", "subscriber"):
            raw[kind] = [r for r in raw.get(kind, [])
                         if _when_matches(r.get("when"), values)]
            for r in raw[kind]:
                r.pop("when", None)
                if "options" in r:
                    r["options"] = [_subst(o, values) for o in r["options"]]
        raw.pop("sweep", None)
        sc = parse(raw, self.path, self.text, sweeps_done=True)
        sc.sweeps = self.sweeps
        return sc


def _when_matches(when, values):
    if not when:
        return True
    for k, v in when.items():
        allowed = v if isinstance(v, list) else [v]
        if k in values and values[k] not in allowed:
            return False
    return True


def _subst(opt, values):
    for k, v in values.items():
        opt = opt.replace("{" + k + "}", str(v))
    return opt


def _check(kind, value, path, field, hosts):
    def err(msg):
        raise ScenarioError(path, field, msg)

    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool) or \
                value < 0:
            err(f"expected a whole number >= 0, got {value!r}")
        return value
    if kind == "size":
        if not isinstance(value, int) or isinstance(value, bool) or \
                not HEADER_BYTES <= value <= 64 * 1024 * 1024:
            err(f"expected a payload size in bytes from {HEADER_BYTES} "
                f"(loadgen's header) to 64 MiB, got {value!r}")
        return value
    if kind in ("float", "rate"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            err(f"expected a number, got {value!r}")
        if kind == "rate" and value != 0 and value < 0.001:
            err("messages/s per client: at least 0.001, or 0 for as fast "
                "as possible")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            err(f"expected a string, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            err(f"expected true or false, got {value!r}")
        return value
    if kind == "dur":
        try:
            return parse_duration(value)
        except ValueError as e:
            err(str(e))
    if kind == "qos":
        if value not in (0, 1, 2) or isinstance(value, bool):
            err(f"QoS must be 0, 1 or 2, got {value!r}")
        return value
    if kind == "mqtt":
        if str(value) not in ("3.1.1", "5"):
            err(f"MQTT version must be \"3.1.1\" or \"5\", got {value!r}")
        return str(value)
    if kind == "arrival":
        if value not in ("constant", "poisson"):
            err(f"arrival must be \"constant\" or \"poisson\", got "
                f"{value!r}")
        return value
    if kind == "host":
        m = HOST_RE.match(str(value))
        if not m or not 1 <= int(m.group(2)) <= hosts:
            err(f"no host {value!r} in a dumbbell of {hosts} hosts per "
                f"side (l1..l{hosts}, r1..r{hosts}; the broker is on "
                f"{BROKER_HOST})")
        return value
    if kind == "topic":
        if not isinstance(value, str) or not value or \
                any(c in value for c in "+#\0"):
            err(f"a topic to publish on, without wildcards, got {value!r}")
        if "{client}" in value:
            err("use {n} (the client's index) in scenario topics: the "
                "runner must know every concrete topic to count what "
                "each subscriber should receive")
        return value
    if kind == "filters":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or \
                not all(isinstance(v, str) and valid_filter(v)
                        for v in value):
            err(f"expected a list of valid topic filters (+ for one "
                f"level, # at the end), got {value!r}")
        return value
    if kind == "list":
        if not isinstance(value, list) or \
                not all(isinstance(v, (str, int, float)) for v in value):
            err(f"expected a list of command-line words, got {value!r}")
        return [str(v) for v in value]
    if kind == "when":
        if not isinstance(value, dict) or not value:
            err("expected a table {sweep = value or [values]}: the role "
                "exists only in those variants")
        return {k: (v if isinstance(v, list) else [v])
                for k, v in value.items()}
    if kind == "transports":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or \
                not all(v in TRANSPORT_NAMES for v in value):
            err(f"expected a list of transports out of "
                f"{', '.join(TRANSPORT_NAMES)}, got {value!r}")
        return value
    raise AssertionError(kind)


def _role(kind, raw, index, path, hosts, defaults):
    fields = PUBLISHER_FIELDS if kind == "publisher" else SUBSCRIBER_FIELDS
    where = f"{kind}[{index}]"
    if not isinstance(raw, dict):
        raise ScenarioError(path, where, "expected a table [[" + kind + "]]")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ScenarioError(path, f"{where}.name", "every role needs a name "
                            "of letters, digits, '-' or '_' (its files are "
                            "named after it)")
    where = f"{kind} {name!r}"
    f = {}
    for key, value in raw.items():
        if key == "name":
            continue
        if key not in fields:
            raise ScenarioError(path, f"{where}.{key}",
                                _suggest(key, list(fields)))
        f[key] = _check(fields[key][0], value, path, f"{where}.{key}",
                        hosts)
    for key in REQUIRED[kind]:
        if key not in f:
            raise ScenarioError(path, f"{where}.{key}", "required")
    for key, (_, _, default) in fields.items():
        if key not in f:
            f[key] = defaults.get(key, default)
    if kind == "publisher":
        ends = [k for k in ("count", "duration", "idle") if f.get(k)]
        if len(ends) != 1:
            raise ScenarioError(path, where, "say how it ends: exactly "
                                "one of count (messages per client), "
                                "duration, or idle = true")
        if f["clients"] < 1:
            raise ScenarioError(path, f"{where}.clients", "at least 1")
        if f["repeat"] < 1:
            raise ScenarioError(path, f"{where}.repeat", "at least 1")
        if f["repeat"] > 1 and not f.get("count"):
            raise ScenarioError(path, f"{where}.repeat", "a repeated "
                                "process (a wake cycle) must end by "
                                "itself: give it a count")
    return Role(kind, name, f)


def parse(raw, path, text="", sweeps_done=False):
    """Check a scenario read from TOML; raises ScenarioError."""
    def err(field, msg):
        raise ScenarioError(path, field, msg)

    for key in raw:
        if key not in TOP_KEYS:
            err(key, _suggest(key, list(TOP_KEYS)))
    name = raw.get("name", Path(path).stem)
    if name != Path(path).stem:
        err("name", f"must be the file's name {Path(path).stem!r}")
    hosts = raw.get("hosts", DEFAULT_HOSTS)
    if not isinstance(hosts, int) or isinstance(hosts, bool) or \
            not 1 <= hosts <= 99:
        err("hosts", f"hosts per side, 1 to 99, got {hosts!r}")
    defaults = {}
    if "mqtt" in raw:
        defaults["mqtt"] = _check("mqtt", raw["mqtt"], path, "mqtt", hosts)
    if "qos" in raw:
        defaults["qos"] = _check("qos", raw["qos"], path, "qos", hosts)
    defaults.setdefault("mqtt", "3.1.1")
    defaults.setdefault("qos", 0)
    drain = DEFAULT_DRAIN_S
    if "drain" in raw:
        drain = _check("dur", raw["drain"], path, "drain", hosts)
    profiles = raw.get("profiles")
    if profiles is not None and (not isinstance(profiles, list) or
                                 not all(isinstance(p, str)
                                         for p in profiles)):
        err("profiles", "expected a list of profile names")
    transports = raw.get("transports")
    if transports is not None:
        transports = _check("transports", transports, path, "transports",
                            hosts)
    broker = raw.get("broker", {})
    if not isinstance(broker, dict) or \
            not all(isinstance(v, (str, int)) for v in broker.values()):
        err("broker", "expected a table of Mosquitto settings "
            "(setting = value)")
    link = raw.get("link", {})
    if not isinstance(link, dict):
        err("link", "expected a table of link profile fields")
    for k in link:
        if k not in LINK_FIELDS:
            err(f"link.{k}", _suggest(k, list(LINK_FIELDS)))
    pubs = [_role("publisher", r, i, path, hosts, defaults)
            for i, r in enumerate(raw.get("publisher", []))]
    subs = [_role("subscriber", r, i, path, hosts, defaults)
            for i, r in enumerate(raw.get("subscriber", []))]
    if not pubs:
        err("publisher", "a scenario needs at least one [[publisher]]")
    names = [r.name for r in pubs + subs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        err("name", f"role names must be unique: {', '.join(sorted(dup))}")
    sweeps = []
    if not sweeps_done:
        for i, s in enumerate(raw.get("sweep", [])):
            sweeps.append(_sweep(s, i, path, names, pubs, subs))
    if not sweeps_done:
        swept = {s["name"]: [str(v) for v in s["values"]] for s in sweeps}
        for r in pubs + subs:
            for k, vs in (r.f.get("when") or {}).items():
                if k not in swept:
                    err(f"{r.kind} {r.name!r}.when.{k}", "no [[sweep]] of "
                        "that name")
                for v in vs:
                    if str(v) not in swept[k]:
                        err(f"{r.kind} {r.name!r}.when.{k}", f"{v!r} is not "
                            f"one of the sweep's values")
    needs = raw.get("needs", [])
    if not isinstance(needs, list) or \
            not all(isinstance(n, str) for n in needs):
        err("needs", "expected a list of strings")
    return Scenario(name=name, path=str(path),
                    description=raw.get("description", ""), hosts=hosts,
                    drain_s=drain, profiles=profiles, transports=transports,
                    broker={k: str(v) for k, v in broker.items()},
                    link=dict(link), publishers=pubs, subscribers=subs,
                    sweeps=sweeps, needs=needs, raw=raw, text=text)


def _sweep(s, i, path, names, pubs, subs):
    where = f"sweep[{i}]"
    if not isinstance(s, dict):
        raise ScenarioError(path, where, "expected a table [[sweep]]")
    for k in s:
        if k not in SWEEP_KEYS:
            raise ScenarioError(path, f"{where}.{k}",
                                _suggest(k, list(SWEEP_KEYS)))
    name = s.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ScenarioError(path, f"{where}.name", "a name of letters, "
                            "digits, '-' or '_'")
    values = s.get("values")
    if not isinstance(values, list) or not values:
        raise ScenarioError(path, f"{where}.values", "a non-empty list")
    targets = s.get("set", [])
    if isinstance(targets, str):
        targets = [targets]
    roles = {("publisher", r.name) for r in pubs} | \
        {("subscriber", r.name) for r in subs}
    for t in targets:
        parts = t.split(".")
        ok = (len(parts) == 2 and parts[0] == "link" and
              parts[1] in LINK_FIELDS) or \
            (len(parts) == 2 and parts[0] == "broker") or \
            (len(parts) == 3 and (parts[0], parts[1]) in roles and
             parts[2] in (PUBLISHER_FIELDS if parts[0] == "publisher"
                          else SUBSCRIBER_FIELDS))
        if not ok:
            raise ScenarioError(path, f"{where}.set", f"{t!r} is not "
                                "link.FIELD, broker.SETTING or "
                                "publisher|subscriber.ROLE.FIELD of this "
                                "scenario")
    only = s.get("only", {})
    if not isinstance(only, dict):
        raise ScenarioError(path, f"{where}.only", "a table value = "
                            "[transports]")
    for k, v in only.items():
        if k not in [str(x) for x in values]:
            raise ScenarioError(path, f"{where}.only.{k}",
                                "not one of the values")
        _check("transports", v, path, f"{where}.only.{k}", 99)
    return {"name": name, "values": values, "set": targets,
            "only": {k: list(v) for k, v in only.items()}}


def load_file(path):
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(path, None, f"cannot read: {e.strerror}") \
            from None
    except UnicodeDecodeError:
        raise ScenarioError(path, None, "not UTF-8 text") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(path, None, f"TOML syntax error: {e}") from None
    sc = parse(raw, path, text)
    for label, values in sc.variants():
        sc.apply(values)          # every variant must be valid too
    return sc


def names(directory=SCENARIO_DIR):
    return sorted(p.stem for p in Path(directory).glob("*.toml"))


def load(spec, directory=SCENARIO_DIR):
    """A scenario by name (scenarios/NAME.toml) or by path."""
    spec = str(spec)
    if spec.endswith(".toml") or os.sep in spec:
        return load_file(spec)
    path = Path(directory) / f"{spec}.toml"
    if not path.exists():
        known = ", ".join(names(directory)) or "none"
        raise ScenarioError(path, None, f"no such scenario (known: "
                            f"{known}; a scenario is a file "
                            f"scenarios/NAME.toml)")
    return load_file(path)


# ---- what a cell runs ---------------------------------------------------------

def expected_messages(sub, publishers, transport):
    """Messages subscriber `sub` should receive if nothing is lost, from
    the scenario alone: per matching client topic, messages per client
    times processes. None when a matching publisher does not fix its
    count (then the sink is stopped by signal after the drain)."""
    total = 0
    for p in publishers:
        if not p.applies_to(transport):
            continue
        for topic in p.topics():
            if any(topic_matches(f, topic) for f in sub.f["topics"]):
                n = p.messages_per_client()
                if n is None:
                    return None
                total += n * p.processes()
    return total


def publisher_args(role):
    """loadgen options for a publisher role (connection options apart)."""
    f = role.f
    args = []
    for key, (kind, opt, _) in PUBLISHER_FIELDS.items():
        if opt is None or f.get(key) is None:
            continue
        v = f[key]
        if kind == "bool":
            if v:
                args.append(opt)
        elif kind == "dur":
            args += [opt, fmt_duration(v)]
        elif kind == "rate":
            args += [opt, f"{v:g}"]
        else:
            args += [opt, str(v)]
    return args + list(f["options"])


def subscriber_args(role, expected, expect_option="--count"):
    """sink options for a subscriber role; expected (what the scenario
    says it will receive) goes to expect_option: sink --expect (distinct
    benchmark messages, which also ends a drain) where it has it, else
    --count."""
    f = role.f
    args = []
    for t in f["topics"]:
        args += ["--topic", t]
    args += ["--qos", str(f["qos"]), "--mqtt", f["mqtt"]]
    if f.get("coalesce") is not None:
        args += ["--coalesce", fmt_duration(f["coalesce"])]
    if expected:
        args += [expect_option, str(expected)]
    return args + list(f["options"])


def role_deadline_s(role):
    """How long a publisher process may take before the runner calls it
    hung: generous (twice the schedule, Poisson tails included, plus
    connection set-up on the slowest link and the ack drain)."""
    f = role.f
    sched = 0.0
    if f.get("count") and f["rate"] > 0:
        sched = f["count"] / f["rate"]
    if f.get("cycles"):
        sched = (sched + (f.get("sleep") or 0) + 5.0) * f["cycles"]
    elif f.get("duration"):
        sched = f["duration"]
    ramp = f.get("ramp_up") or 0.0
    conn = 2.0 * f["clients"] / max(1, f.get("max_pending") or 64)
    return 2 * (sched + ramp) + conn + f["hold"] + 40.0


def check_options(argv_options, help_options, tool):
    """The options of argv that `tool --help` does not list, as one line,
    or None."""
    missing = sorted({o for o in argv_options if o.startswith("--")} -
                     set(help_options))
    if not missing:
        return None
    return (f"{tool} has no option {', '.join(missing)} (not built yet; "
            f"README, \"What the runner needs\")")


def help_options(binary):
    """Long options that `binary --help` lists."""
    import subprocess
    try:
        r = subprocess.run([binary, "--help"], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", r.stdout + r.stderr))
