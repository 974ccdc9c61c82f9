"""The benchmark's command line (as root, with /usr/bin/python3):

  python3 -m runner bench      [options]   the matrix; `make bench`
  python3 -m runner figures    RUN_DIR     redraw from JSON; `make figures`
  python3 -m runner footprint              binary sizes; `make footprint`

bench options (each also read from the environment variable in capitals,
which is how `make bench PROFILES=3g` passes them; an option wins):

  --scenarios A,B     scenario names (default: smart-home,connect)
  --profiles A,B      link profiles, or "all" for every profile file
                      (default: each scenario's own, or the study's five:
                      3g, 4g, ethernet, wifi, zigbee)
  --transports A,B    tcp, tls, quic (default: each scenario's own, or all)
  --reps N            repetitions (default 3)
  --quick             the small subset: profile 3g, 1 repetition
  --list              print the cells and exit
  --resume RUN_DIR    continue an interrupted run (its own selection);
                      cells that ended "ok" are kept, the rest run again
  --capture           pcap of the bottleneck and TLS key log per cell
  --qlog              QUIC cells: a qlog file per connection from every
                      QUIC endpoint (loadgen, sink, gateway), in qlog/
  --raw               sinks also write per-message records
  --seed N            seed of repetition 1 (repetition r uses N + r - 1)
  --backend B         auto, netem or userspace (default auto)
  --cca NAME          congestion control of every transport: TCP's on
                      every host namespace, QUIC's at every endpoint;
                      cubic (default), reno, or bbr where the kernel has
                      it
  --results DIR       where run folders go (default results/)

Exit status: 0 when every cell ran and none failed except those of a
transport or option not built yet (listed apart); 1 if a cell failed; 2
for a bad option, scenario or profile (one line says which); 130 after
Ctrl-C (everything built is torn down; RESUME= continues).
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from topologies import profiles                      # noqa: E402
from topologies.dumbbell import Terminated           # noqa: E402

from . import matrix, scenario as scn                # noqa: E402
from . import transports as tr                       # noqa: E402

ENV = ("SCENARIOS", "PROFILES", "TRANSPORTS", "REPS", "QUICK", "LIST",
       "RESUME", "CAPTURE", "QLOG", "RAW", "SEED", "BACKEND", "CCA", "RESULTS")


class UsageError(Exception):
    pass


def truthy(v):
    """An environment switch: unset, "", 0, no, false, off are off."""
    return v is not None and \
        str(v).lower() not in ("", "0", "no", "false", "off")


def _split(v):
    if v is None:
        return None
    items = [x.strip() for x in str(v).replace(" ", ",").split(",")
             if x.strip()]
    return items or None


def parse_bench(argv):
    ap = argparse.ArgumentParser(prog="python3 -m runner bench",
                                 add_help=True)
    ap.add_argument("--scenarios")
    ap.add_argument("--profiles")
    ap.add_argument("--transports")
    ap.add_argument("--reps")
    ap.add_argument("--quick", action="store_const", const="1")
    ap.add_argument("--list", action="store_const", const="1")
    ap.add_argument("--resume")
    ap.add_argument("--capture", action="store_const", const="1")
    ap.add_argument("--qlog", action="store_const", const="1")
    ap.add_argument("--raw", action="store_const", const="1")
    ap.add_argument("--seed")
    ap.add_argument("--backend")
    ap.add_argument("--cca")
    ap.add_argument("--results")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        raise SystemExit(2 if e.code else 0)
    for name in ENV:
        attr = name.lower()
        if getattr(args, attr, None) is None and os.environ.get(name):
            setattr(args, attr, os.environ[name])
    return args


def selection(args):
    quick = truthy(args.quick)
    scenarios = _split(args.scenarios) or list(matrix.DEFAULT_SCENARIOS)
    profs = _split(args.profiles) or \
        (list(matrix.QUICK_PROFILES) if quick else None)
    trans = _split(args.transports)
    for t in trans or []:
        if t not in tr.NAMES:
            raise UsageError(f"TRANSPORTS: unknown transport {t!r} "
                             f"(known: {', '.join(tr.NAMES)})")
    reps = args.reps or (matrix.QUICK_REPS if quick else
                         matrix.DEFAULT_REPS)
    try:
        reps = int(reps)
        if reps < 1:
            raise ValueError
    except ValueError:
        raise UsageError(f"REPS: a whole number of repetitions >= 1, got "
                         f"{args.reps!r}") from None
    if args.cca is not None:
        try:
            tr.check_cc(args.cca)
        except ValueError as e:
            raise UsageError(str(e)) from None
    seed = args.seed or 1
    try:
        seed = int(seed)
        if seed < 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"SEED: a whole number >= 0, got {args.seed!r}") \
            from None
    if profs == ["all"]:
        profs = profiles.profile_names()
    for p in profs or []:
        profiles.load_profile(p)          # ProfileError names the file
    for s in scenarios:
        scn.load(s)                       # ScenarioError names the field
    return matrix.Selection(scenarios=scenarios, profiles=profs,
                            transports=trans, reps=reps, seed=seed)


def print_cells(cells, out=sys.stdout):
    out.write(f"{len(cells)} cells (scenario [variant], profile, "
              f"transport, repetition, seed):\n")
    for i, c in enumerate(cells, 1):
        out.write(f"  {i:4d}  {c.id}  seed {c.seed}\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "bench":
            from . import bench
            args = parse_bench(rest)
            if args.resume:
                return bench.resume(args)
            sel = selection(args)
            cells = matrix.cells(sel, [p for p in matrix.STUDY_PROFILES
                                       if p in profiles.profile_names()])
            if truthy(args.list):
                print_cells(cells)
                return 0
            return bench.run(args, sel, cells)
        if cmd == "figures":
            from . import aggregate
            if len(rest) != 1:
                raise UsageError("usage: python3 -m runner figures RUN_DIR "
                                 "(make figures RUN=results/<run-id>)")
            return aggregate.main(rest[0])
        if cmd == "footprint":
            from . import footprint
            return footprint.main(rest)
        raise UsageError(f"unknown command {cmd!r} (bench, figures, "
                         f"footprint)")
    except (UsageError, scn.ScenarioError, profiles.ProfileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:          # `... --list | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 128 + e.signum


if __name__ == "__main__":
    sys.exit(main())
