"""results/<run-id>/: the layout of a run's folder, atomic files, the
merged summary, CSV tables and the results/latest link.

  run.json              the run: selection, cells, metadata (versions,
                        kernel, backend, git commit, certificates ...)
  run.log               one plain line per event (progress included)
  certs/                the run's CA and broker certificate
  cells/<cell-id>/      one folder per cell: cell.json (schema
                        runner/schema/cell.schema.json), each process's
                        JSON and log, broker/ (config, log), capture.pcap
                        and keylog.txt with CAPTURE=1
  summary.json          every cell's status and figures, with the run
                        (schema runner/schema/summary.schema.json)
  tables/*.csv          the same flat, for pandas and R
  data/, figures/       aggregation output and gnuplot figures
  REPORT.md, report.html, tables.tex

Every file is written through a temporary file and a rename: an
interrupted run never leaves a half-written JSON.
"""
import csv
import datetime
import io
import json
import os
import re

from topologies.state import atomic_write

from .metrics import _ms, handshake_us

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY_SCHEMA = "mqb-summary/1"
RUN_SCHEMA = "mqb-run/1"


def iso_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def atomic_json(path, doc):
    atomic_write(path, json.dumps(doc, indent=1, sort_keys=True,
                                  allow_nan=False, default=str) + "\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def new_run_id(results_dir):
    base = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    rid, n = base, 1
    while os.path.exists(os.path.join(results_dir, rid)):
        n += 1
        rid = f"{base}-{n}"
    return rid


def link_latest(results_dir, run_dir):
    """results/latest -> <run-id>, replaced atomically."""
    link = os.path.join(results_dir, "latest")
    tmp = f"{link}.tmp{os.getpid()}"
    target = os.path.relpath(run_dir, results_dir)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def cell_dirs(run_dir):
    d = os.path.join(run_dir, "cells")
    if not os.path.isdir(d):
        return []
    return sorted(os.path.join(d, n) for n in os.listdir(d)
                  if os.path.isfile(os.path.join(d, n, "cell.json")))


def load_cells(run_dir):
    return [read_json(os.path.join(d, "cell.json"))
            for d in cell_dirs(run_dir)]


# ---- summary ----------------------------------------------------------------------

SUMMARY_CELL_KEYS = ("id", "scenario", "variant", "values", "profile",
                     "transport", "rep", "seed", "status", "error",
                     "started", "ended", "duration_s", "metrics")


def summary(run, cells):
    """The merged summary: the run and each cell's status and figures
    (the cells' full records stay in their folders)."""
    order = {c["id"]: i for i, c in enumerate(run.get("cells", []))}
    cells = sorted(cells, key=lambda c: (order.get(c["id"], 1 << 30),
                                         c["id"]))
    counts = {}
    for c in cells:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    planned = len(run.get("cells", []))
    return {"schema": SUMMARY_SCHEMA, "run_id": run["run_id"],
            "run": {k: run[k] for k in ("selection", "metadata", "started",
                                        "ended", "status", "argv")
                    if k in run},
            "planned": planned,
            "counts": counts,
            "not_run": planned - len(cells),
            "cells": [{k: c.get(k) for k in SUMMARY_CELL_KEYS}
                      for c in cells]}


# ---- CSV --------------------------------------------------------------------------

def flatten(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            continue
        else:
            out[key] = v
    return out


def csv_text(rows, columns=None):
    columns = columns or sorted({k for r in rows for k in r})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in columns})
    return buf.getvalue()


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.9g}"
    return v


CELL_COLUMNS = ("id", "scenario", "variant", "profile", "transport", "rep",
                "seed", "status", "error", "duration_s")


def write_tables(run_dir, cells):
    """tables/cells.csv (one row per cell, every figure a column) and
    tables/connections.csv (one row per connection: its connect times)."""
    tdir = os.path.join(run_dir, "tables")
    os.makedirs(tdir, exist_ok=True)
    rows = []
    for c in cells:
        row = {k: c.get(k) for k in CELL_COLUMNS}
        m = dict(c.get("metrics") or {})
        w = m.pop("wire", None) or {}
        w.pop("directions", None)
        row.update(flatten(m, "m."))
        row.update(flatten(w, "m.wire."))
        rows.append(row)
    metric_cols = sorted({k for r in rows for k in r} - set(CELL_COLUMNS))
    atomic_write(os.path.join(tdir, "cells.csv"),
                 csv_text(rows, list(CELL_COLUMNS) + metric_cols))
    conns = []
    for c in cells:
        cdir = os.path.join(run_dir, "cells", c["id"])
        for rec in c.get("processes") or []:
            if rec.get("kind") != "publisher":
                continue
            try:
                doc = read_json(os.path.join(cdir, rec["json"]))
            except (OSError, ValueError):
                continue
            for conn in doc.get("connections") or []:
                cn = conn.get("connect") or {}
                conns.append({
                    "cell": c["id"], "scenario": c["scenario"],
                    "variant": c["variant"], "profile": c["profile"],
                    "transport": c["transport"], "rep": c["rep"],
                    "process": rec["name"], "index": conn.get("index"),
                    "state": conn.get("state"),
                    "tcp_ms": _ms(cn.get("tcp_us")),
                    "handshake_ms": _ms(handshake_us(cn)),
                    "transport_ready_ms": _ms(cn.get("transport_us")),
                    "mqtt_ms": _ms(cn.get("mqtt_us")),
                    "total_ms": _ms(cn.get("total_us")),
                    "tls_resumed": cn.get("tls_resumed"),
                    "sent": conn.get("sent"), "error": conn.get("error")})
    cols = ["cell", "scenario", "variant", "profile", "transport", "rep",
            "process", "index", "state", "tcp_ms", "handshake_ms",
            "transport_ready_ms", "mqtt_ms", "total_ms", "tls_resumed", "sent", "error"]
    atomic_write(os.path.join(tdir, "connections.csv"), csv_text(conns,
                                                                 cols))


def safe_name(text):
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(text))
