"""Which cells a run has: scenarios x their variants x link profiles x
transports x repetitions, in the order they run.

The order is repetition-major (every combination once, then again), so an
interrupted run has its first repetition complete everywhere, and slow
drifts of the machine (other users' load) spread over all combinations
instead of landing on the last ones.
"""
import dataclasses
import re

from . import scenario as scn
from . import transports as tr

DEFAULT_SCENARIOS = ("smart-home", "connect")
# The dissertation's five links (reference chapter 6): the default matrix.
# Other profile files (null, zigbee-6lowpan, a user's own) run when named
# (PROFILES=null,3g) or with PROFILES=all.
STUDY_PROFILES = ("3g", "4g", "ethernet", "wifi", "zigbee")
DEFAULT_REPS = 3
QUICK_PROFILES = ("3g",)
QUICK_REPS = 1


@dataclasses.dataclass(frozen=True)
class Cell:
    scenario: str
    variant: str                 # "" or "size=256,..." (sweep values)
    values: tuple                # ((sweep name, value), ...)
    profile: str
    transport: str
    rep: int
    seed: int
    source: str = ""             # the scenario file's path

    @property
    def id(self):
        """Folder name: scenario[+variant]__profile__transport__rN."""
        v = f"+{slug(self.variant)}" if self.variant else ""
        return f"{self.scenario}{v}__{self.profile}__{self.transport}__" \
            f"r{self.rep}"

    def label(self):
        v = f" [{self.variant}]" if self.variant else ""
        return f"{self.scenario}{v} {self.profile} {self.transport} " \
            f"rep {self.rep}"

    def to_dict(self):
        return {"id": self.id, "scenario": self.scenario,
                "variant": self.variant, "values": dict(self.values),
                "profile": self.profile, "transport": self.transport,
                "rep": self.rep, "seed": self.seed,
                "scenario_path": self.source}


def slug(text):
    text = str(text).replace("%", "pct").replace(",", "+").replace("=", "-")
    return re.sub(r"[^A-Za-z0-9.+_-]", "", text)


@dataclasses.dataclass
class Selection:
    scenarios: list
    profiles: list               # None: each scenario's own, or all
    transports: list             # None: each scenario's own, or all
    reps: int
    seed: int

    def to_dict(self):
        return dataclasses.asdict(self)


def cells(sel, all_profiles, load=scn.load):
    """The cells of a selection, in running order. load(name) reads a
    scenario (ScenarioError for a bad one)."""
    combos = []
    for name in sel.scenarios:
        sc = load(name)
        profs = sel.profiles or sc.profiles or list(all_profiles)
        trans = sel.transports or sc.transports or list(tr.NAMES)
        for label, values in sc.variants():
            for p in profs:
                for t in trans:
                    if sc.variant_allows(values, t):
                        combos.append((sc.name, label,
                                       tuple(values.items()), p, t,
                                       sc.path))
    out = []
    for rep in range(1, sel.reps + 1):
        for s, label, values, p, t, path in combos:
            out.append(Cell(s, label, values, p, t, rep,
                            seed=sel.seed + rep - 1, source=path))
    return out
