"""A run of the matrix: results/<run-id>/, one cell after another, the
summary, tables, figures and report at the end (also after a failed
cell; after Ctrl-C the finished cells are summarised and RESUME= goes on).
"""
import os
import signal
import sys
import time

from topologies.dumbbell import Terminated, host_ip

from . import certs as certmod, matrix, meta, progress, results
from . import scenario as scn, transports as tr
from .cell import CellRun, RunContext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROKER_IP = host_ip(scn.BROKER_HOST)


class RunError(Exception):
    pass


def _bindir():
    return os.environ.get("BENCH_BIN") or os.path.join(REPO, "build",
                                                       "release", "bin")


def _check_env(bindir):
    if os.geteuid() != 0:
        raise RunError("make bench must run as root (Mininet creates "
                       "namespaces, bridges and veths)")
    for t in ("loadgen", "sink", "linkem"):
        if not os.access(os.path.join(bindir, t), os.X_OK):
            raise RunError(f"{os.path.join(bindir, t)} is missing: run "
                           f"'make' first (or set BENCH_BIN)")


def _make_certs(run_dir):
    d = os.path.join(run_dir, "certs")
    names, ips = ["broker"], [BROKER_IP, "127.0.0.1"]
    c = certmod.broker_set(d, names, ips)
    c["info"] = certmod.describe(c, names, ips)
    return c


def _options(args):
    from .__main__ import truthy as t
    return {"capture": t(args.capture), "raw": t(args.raw),
            "qlog": t(args.qlog),
            "backend": args.backend or "auto",
            "cc": args.cca or tr.DEFAULT_CC}


def run(args, sel, cells):
    bindir = _bindir()
    try:
        _check_env(bindir)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rdir = os.path.abspath(args.results or os.path.join(REPO, "results"))
    os.makedirs(rdir, exist_ok=True)
    run_id = results.new_run_id(rdir)
    run_dir = os.path.join(rdir, run_id)
    os.makedirs(os.path.join(run_dir, "cells"))
    opts = _options(args)
    try:
        certs = _make_certs(run_dir)
    except certmod.CertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    doc = {"schema": results.RUN_SCHEMA, "run_id": run_id,
           "selection": sel.to_dict(), "options": opts,
           "cells": [c.to_dict() for c in cells],
           "argv": sys.argv, "started": results.iso_now(), "ended": None,
           "status": "running", "resumed": [],
           "certificates": certs["info"],
           "metadata": meta.collect(bindir, opts["backend"])}
    results.atomic_json(os.path.join(run_dir, "run.json"), doc)
    results.link_latest(rdir, run_dir)
    return _execute(run_dir, doc, cells, set(), certs, bindir)


def resume(args):
    bindir = _bindir()
    run_dir = os.path.abspath(args.resume)
    path = os.path.join(run_dir, "run.json")
    try:
        doc = results.read_json(path)
    except (OSError, ValueError) as e:
        print(f"error: RESUME={args.resume}: no readable run.json ({e})",
              file=sys.stderr)
        return 2
    try:
        _check_env(bindir)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cells = [matrix.Cell(scenario=c["scenario"], variant=c["variant"],
                         values=tuple(c["values"].items()),
                         profile=c["profile"], transport=c["transport"],
                         rep=c["rep"], seed=c["seed"],
                         source=c.get("scenario_path", ""))
             for c in doc["cells"]]
    keep = {c["id"] for c in results.load_cells(run_dir)
            if c.get("status") == "ok"}
    d = os.path.join(run_dir, "certs")
    if os.path.exists(os.path.join(d, "broker.pem")):
        certs = {"dir": d, "ca": os.path.join(d, "ca.pem"),
                 "ca_key": os.path.join(d, "ca.key"),
                 "broker": os.path.join(d, "broker.pem"),
                 "broker_key": os.path.join(d, "broker.key")}
    else:
        certs = _make_certs(run_dir)
    doc["resumed"].append({"at": results.iso_now(), "kept": len(keep),
                           "argv": sys.argv})
    doc["status"] = "running"
    print(f"resuming {run_dir}: {len(keep)} of {len(cells)} cells ended "
          f"ok and are kept (the run's own selection is used)")
    return _execute(run_dir, doc, cells, keep, certs, bindir)


def _on_term(signum, frame):
    raise Terminated(signum)


def _execute(run_dir, doc, cells, keep, certs, bindir):
    opts = doc["options"]
    prog = progress.Progress(len(cells), os.path.join(run_dir, "run.log"))
    ctx = RunContext(run_dir, bindir, certs, backend=opts["backend"],
                     capture=opts["capture"], raw=opts["raw"],
                     qlog=opts.get("qlog", False), cc=opts.get("cc"),
                     log=prog.log)
    old = {s: signal.signal(s, _on_term) for s in (signal.SIGTERM,
                                                   signal.SIGHUP)}
    interrupted = None
    t0 = time.monotonic()
    prog.log(f"run {doc['run_id']}: {len(cells)} cells, results in "
             f"{run_dir}")
    try:
        for i, c in enumerate(cells, 1):
            if c.id in keep:
                prog.log(f"cell {i}/{len(cells)} kept (ok before): {c.id}")
                continue
            rest = [x for x in cells[i:] if x.id not in keep]
            prog.start(i, c, rest)
            res = CellRun(c, ctx).run()
            prog.end(c, res)
    except (KeyboardInterrupt, Terminated) as e:
        interrupted = e
    finally:
        prog.close()
        for s, h in old.items():
            signal.signal(s, h)
    doc["ended"] = results.iso_now()
    doc["status"] = "interrupted" if interrupted else "done"
    doc["wall_s"] = round(time.monotonic() - t0, 1)
    results.atomic_json(os.path.join(run_dir, "run.json"), doc)
    cells_done = results.load_cells(run_dir)
    results.atomic_json(os.path.join(run_dir, "summary.json"),
                        results.summary(doc, cells_done))
    results.write_tables(run_dir, cells_done)
    from . import aggregate
    try:
        rc_fig, short = aggregate.build(run_dir)
    except Exception as e:          # the results stay; say so and go on
        import traceback
        with open(os.path.join(run_dir, "aggregate-traceback.txt"),
                  "w") as f:
            f.write(traceback.format_exc())
        print(f"error: figures and report failed ({e!r}; "
              f"aggregate-traceback.txt); the cells' results are intact: "
              f"make figures RUN={run_dir}", file=sys.stderr)
        rc_fig, interrupted_table = 1, True
    else:
        interrupted_table = bool(interrupted)
    failed = [c for c in cells_done if c["status"] != "ok"]
    not_built = [c for c in failed if c.get("failure_kind") == "not-built"]
    real = [c for c in failed if c not in not_built]
    print(f"\nrun {doc['run_id']}: {len(cells_done) - len(failed)} ok, "
          f"{len(real)} failed, {len(not_built)} not built yet, "
          f"{len(cells) - len(cells_done)} not run; wall time "
          f"{progress.fmt_s(doc['wall_s'])}")
    if not interrupted_table:
        sys.stdout.write(short)
    if not_built:
        kinds = sorted({c["error"] for c in not_built})
        print("not built yet (recorded as failed):")
        for k in kinds:
            print(f"  {k}")
    for c in real:
        print(f"failed: {c['id']}: {c['error']}")
    print(f"results: {run_dir} (also {os.path.join(os.path.dirname(run_dir), 'latest')}); "
          f"report: {os.path.join(run_dir, 'REPORT.md')}")
    if interrupted:
        print(f"interrupted: everything built was torn down; continue "
              f"with: make bench RESUME={os.path.relpath(run_dir)}")
        return 130 if isinstance(interrupted, KeyboardInterrupt) else \
            128 + interrupted.signum
    return 1 if real or rc_fig else 0
