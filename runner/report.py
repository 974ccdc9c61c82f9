"""The report of a run: REPORT.md, a self-contained report.html (figures
inline as base64 PNG), tables.tex (booktabs) and the short table printed
at the end of `make bench`. All from the aggregation's numbers; the
report's text is built once as blocks and rendered three ways."""
import base64
import glob
import html
import os

from topologies.state import atomic_write

from . import results, stats
from .progress import fmt_s

# The figures a scenario's tables show, in this order, when it has them.
TABLE_METRICS = ("connect_ms", "connect_mean_ms", "connect_tcp_ms", "connect_handshake_ms",
                 "connect_mqtt_ms", "latency_p50_ms", "latency_p99_ms",
                 "latency_p50_vs_lossless",
                 "delivery_ratio", "delivery_qos1", "delivery_qos2",
                 "bytes_per_message", "frames_per_message",
                 "bytes_per_connection", "frames_per_connection",
                 "wake_to_puback_ms", "bytes_per_cycle", "goodput_mbps",
                 "hol_spread_p50_ms", "hol_coincidence", "hol_correlation",
                 "max_gap_ms", "migration_gap_ms", "migration_down_ms",
                 "migration_validation_ms", "migration_resent")
CONNECT_PARTS = ("connect_mean_ms", "connect_tcp_ms",
                 "connect_handshake_ms", "connect_mqtt_ms")
SHORT_METRICS = ("connect_ms", "latency_p50_ms", "latency_p99_ms",
                 "delivery_ratio", "wake_to_puback_ms", "goodput_mbps")
HIGHER_IS_BETTER = ("delivery", "goodput")


def fmt(x, unit=""):
    if x is None:
        return "-"
    if unit == "" and x <= 1.0:
        return f"{x:.4f}"
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def cell_text(s, unit):
    if s is None:
        return "-"
    if s["n"] == 1:
        return f"{fmt(s['mean'], unit)} (n=1)"
    return f"{fmt(s['mean'], unit)} [{fmt(s['lo'], unit)}, " \
        f"{fmt(s['hi'], unit)}]"


def overlaps_text(ss, metric):
    """Which transports' intervals overlap, which do not (and which way)."""
    parts = []
    names = [t for t, s in ss if s and s["n"] > 1]
    d = dict(ss)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sa, sb = d[a], d[b]
            if stats.overlap(sa, sb):
                parts.append(f"{a}~{b} overlap")
            else:
                lo, hi = (a, b) if sa["mean"] < sb["mean"] else (b, a)
                parts.append(f"{lo}<{hi}")
    return ", ".join(parts) if parts else "-"


# ---- blocks --------------------------------------------------------------------

class Doc:
    def __init__(self):
        self.blocks = []

    def h(self, level, text):
        self.blocks.append(("h", level, text))

    def p(self, text):
        self.blocks.append(("p", text))

    def ul(self, items):
        self.blocks.append(("ul", list(items)))

    def table(self, header, rows, caption=None):
        self.blocks.append(("table", header, rows, caption))

    def fig(self, name, caption):
        self.blocks.append(("fig", name, caption))

    def pre(self, text):
        self.blocks.append(("pre", text))

    def markdown(self):
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {i}" for i in b[1]))
            elif b[0] == "table":
                _, header, rows, cap = b
                t = ["| " + " | ".join(header) + " |",
                     "| " + " | ".join("---" for _ in header) + " |"]
                t += ["| " + " | ".join(str(c).replace("|", "\\|")
                                        for c in r) + " |" for r in rows]
                if cap:
                    t.insert(0, f"*{cap}*\n")
                out.append("\n".join(t))
            elif b[0] == "fig":
                out.append(f"![{b[1]}](figures/{b[1]}.png)\n\n"
                           f"*{b[1]}* ([SVG](figures/{b[1]}.svg)): {b[2]}")
            elif b[0] == "pre":
                out.append("```\n" + b[1].rstrip() + "\n```")
        return "\n\n".join(out) + "\n"

    def html(self, fig_dir, title):
        e = html.escape
        out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
               f"<title>{e(title)}</title><style>",
               "body{font-family:sans-serif;max-width:1000px;margin:2em "
               "auto;padding:0 1em;color:#222}"
               "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
               "td,th{border-top:1px solid #ccc;border-bottom:1px solid "
               "#ccc;padding:3px 8px;text-align:left}"
               "th{border-bottom:2px solid #444}"
               "img{max-width:100%}figure{margin:1.5em 0}"
               "figcaption{font-size:90%;color:#444}"
               "pre{background:#f4f4f4;padding:.5em;overflow-x:auto}",
               "</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{e(str(i))}</li>"
                                            for i in b[1]) + "</ul>")
            elif b[0] == "table":
                _, header, rows, cap = b
                t = ["<table>"]
                if cap:
                    t.append(f"<caption>{e(cap)}</caption>")
                t.append("<tr>" + "".join(f"<th>{e(str(h))}</th>"
                                          for h in header) + "</tr>")
                for r in rows:
                    t.append("<tr>" + "".join(f"<td>{e(str(c))}</td>"
                                              for c in r) + "</tr>")
                t.append("</table>")
                out.append("".join(t))
            elif b[0] == "fig":
                path = os.path.join(fig_dir, b[1] + ".png")
                try:
                    with open(path, "rb") as f:
                        data = base64.b64encode(f.read()).decode()
                    img = f"<img alt='{e(b[1])}' " \
                        f"src='data:image/png;base64,{data}'>"
                except OSError:
                    img = f"<p>(figure {e(b[1])} was not drawn)</p>"
                out.append(f"<figure>{img}<figcaption><b>{e(b[1])}</b>: "
                           f"{e(b[2])}</figcaption></figure>")
            elif b[0] == "pre":
                out.append(f"<pre>{e(b[1])}</pre>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


# ---- the report --------------------------------------------------------------

def _first_ok(rows):
    return rows[0]["cell"] if rows else None


def _metadata(doc, run, rows, cells):
    md = run.get("metadata") or {}
    host, ver, git = md.get("host") or {}, md.get("versions") or {}, \
        md.get("git") or {}
    counts = {}
    for c in cells:
        k = c.get("failure_kind") if c["status"] == "failed" else \
            c["status"]
        counts[k or "failed"] = counts.get(k or "failed", 0) + 1
    sel = run.get("selection") or {}
    doc.h(2, "What ran")
    doc.ul([
        f"run {run.get('run_id')}: started {run.get('started')}, ended "
        f"{run.get('ended')}, status {run.get('status')}, wall time "
        f"{fmt_s(run.get('wall_s'))}",
        f"cells: {len(run.get('cells', []))} planned; " +
        ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
        f"scenarios {', '.join(sel.get('scenarios') or [])}; profiles "
        f"{', '.join(sel.get('profiles') or ['each scenario' + chr(39) + 's own'])}"
        f"; transports {', '.join(sel.get('transports') or ['all'])}; "
        f"{sel.get('reps')} repetitions; seed of repetition r: "
        f"{sel.get('seed')} + r - 1 (link loss, Poisson arrivals)",
        f"machine: {host.get('cpu_model')}, {host.get('cpus')} CPUs, "
        f"{(host.get('mem_total_kib') or 0) // 1024} MiB, "
        f"{host.get('os')}, kernel {host.get('kernel')}",
        f"link backend: {(md.get('link_backend') or {}).get('note')}",
        f"project commit {git.get('commit')} ({git.get('branch')}"
        f"{', with uncommitted changes' if git.get('dirty') else ''})"])
    doc.table(["component", "version"],
              [[k, v if v else "-"] for k, v in sorted(ver.items())])
    c0 = _first_ok(rows)
    if c0:
        b = c0.get("broker") or {}
        doc.p("Broker settings (runner/mosquitto.py says why each is set): "
              + ", ".join(f"{k} {v}" for k, v in
                          sorted((b.get("settings") or {}).items())) +
              "; every cell's folder has the exact config "
              "(broker/mosquitto.conf).")
        cert = run.get("certificates") or {}
        doc.p(f"Certificates: made for this run with certtool, "
              f"{cert.get('key_type')} {cert.get('curve')}; broker "
              f"certificate {cert.get('broker_der_bytes')} bytes DER "
              f"(sent in every full TLS/QUIC handshake), CA "
              f"{cert.get('ca_der_bytes')} bytes (not sent).")
        tcp = c0.get("hosts_tcp") or []
        if tcp:
            s = tcp[0]["settings"]
            keys = ("net.ipv4.tcp_congestion_control", "net.ipv4.tcp_sack",
                    "net.ipv4.tcp_timestamps", "net.ipv4.tcp_ecn",
                    "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
                    "net.ipv4.tcp_slow_start_after_idle",
                    "net.ipv4.tcp_syn_retries", "net.core.default_qdisc")
            doc.p(f"TCP inside the host namespaces ({len(tcp)} distinct "
                  f"set(s) over {sum(len(x['hosts']) for x in tcp)} hosts; "
                  f"all in each cell.json): " +
                  "; ".join(f"{k.split('.')[-1]} {s.get(k)}" for k in keys
                            if k in s))
        cc = (run.get("options") or {}).get("cc")
        doc.p(f"Congestion control: {cc} for every transport, chosen for "
              f"the run (CCA=): TCP's as congctl on every route of every "
              f"host namespace, which every connection takes (the "
              f"namespaces' default above is not used), QUIC's passed to "
              f"loadgen, sink and the gateway (--cc)." if cc else
              "Congestion control: not chosen by this run (made before "
              "CCA=): TCP used each host's default (above), QUIC ngtcp2's "
              "cubic.")
        rel = c0.get("release") or {}
        doc.p(f"Start of publishers: {rel.get('method')}.")
    steal = [((r["cell"].get("contention") or {}).get("steal_s") or 0)
             for r in rows]
    te = [((r["cell"].get("link") or {}).get("links", {})
           .get("bottleneck") or {}).get(d, {}).get("timing_error_p99_us")
          for r in rows for d in ("left_to_right", "right_to_left")]
    te = [x for x in te if x is not None]
    doc.p(f"Contention on this {host.get('cpus')}-CPU machine: CPU steal "
          f"over all cells {sum(steal):.2f} s; link emulator timing error "
          f"p99 worst {max(te) if te else float('nan'):.0f} us, median "
          f"over cells {sorted(te)[len(te) // 2] if te else float('nan'):.0f}"
          f" us.")


def _calibration(doc, rows, run_dir):
    doc.h(2, "Links used, and their calibration")
    by_prof = {}
    for r in rows:
        by_prof.setdefault(r["profile"], []).append(r["cell"])
    trows = []
    for p, cells in by_prof.items():
        prof = (cells[0].get("topology") or {}).get("profile") or {}
        d = prof.get("left_to_right") or {}
        for dname in ("left_to_right", "right_to_left"):
            fin = lost = qd = 0
            for c in cells:
                x = ((c.get("link") or {}).get("links", {})
                     .get("bottleneck") or {}).get(dname) or {}
                fin += x.get("frames_in") or 0
                lost += x.get("dropped_loss") or 0
                qd += x.get("dropped_queue") or 0
            w = stats.wilson(lost, fin)
            trows.append([
                p, dname.replace("_", " "),
                f"{(d.get('rate_bps') or 0) / 1e6:g} Mb/s",
                f"{(d.get('delay_us') or 0) / 1000:g} ms",
                f"{(d.get('loss') or 0) * 100:g} %",
                str(d.get("queue_packets") or d.get("queue_bytes")),
                f"{w[0] * 100:.2f} % [{w[1] * 100:.2f}, {w[2] * 100:.2f}]"
                if w else "-", str(fin), str(qd)])
    doc.table(["profile", "direction", "rate", "delay (one way)",
               "loss configured", "queue", "loss seen in this run "
               "(95 % Wilson)", "frames", "queue drops"], trows,
              "Bottleneck as configured, and the loss its emulator "
              "applied over all ok cells of this run")
    dirs = {os.path.dirname(os.path.abspath(run_dir)),
            os.path.join(results.REPO, "results")}
    cal = sorted((os.path.basename(os.path.dirname(p)), p) for d in dirs
                 for p in glob.glob(os.path.join(d, "calibration-*",
                                                 "calibration.md")))
    if cal:
        with open(cal[-1][1]) as f:
            text = f.read()
        doc.p(f"Latest `make calibrate` on this machine ({cal[-1][1]}):")
        doc.pre(text)
    else:
        doc.p("No `make calibrate` result on this machine (results/"
              "calibration-*/): run it to check the links' rate, delay and "
              "loss against their configuration.")


def _scenario_tables(doc, sc, cell, srows, order, idx, figs, latex):
    from .aggregate import shown_metrics
    metrics = shown_metrics(cell, [m for m in TABLE_METRICS
                                   if any(s["scenario"] == sc and
                                          s["metric"] == m for s in srows)])
    if "latency_p50_ms" in metrics:      # messages flow: connect in short
        metrics = [m for m in metrics if m not in CONNECT_PARTS]
    from .aggregate import METRICS
    for m in metrics:
        unit = METRICS[m][1]
        trs = [t for t in order["transport"]
               if any(k[0] == sc and k[3] == t and k[4] == m for k in idx)]
        groups = [(v, p) for v in order["variant"]
                  for p in order["profile"]
                  if any(k[:3] == (sc, v, p) and k[4] == m for k in idx)]
        header = ["profile" + (" / variant" if any(v for v, _ in groups)
                               else "")] + trs + ["intervals"]
        rows = []
        for v, p in groups:
            ss = [(t, idx.get((sc, v, p, t, m))) for t in trs]
            rows.append([f"{p} {v}".strip()] +
                        [cell_text(s, unit) for _, s in ss] +
                        [overlaps_text(ss, m)])
        cap = f"{METRICS[m][2]}" + (f" ({unit})" if unit else "") + \
            ": mean [95 % CI] over repetitions"
        doc.table(header, rows, cap)
        latex.append(_latex_table(sc, m, cap, header, rows))


def _latex_escape(s):
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"),
                 ("&", r"\&"), ("#", r"\#"), ("~", r"$\sim$"),
                 ("<", r"$<$"), (">", r"$>$")):
        s = s.replace(a, b)
    return s


def _latex_table(sc, metric, cap, header, rows):
    cols = "l" + "r" * (len(header) - 2) + "l"
    out = [f"% {sc}: {metric}", r"\begin{table}[htbp]", r"\centering",
           r"\small", f"\\caption{{{_latex_escape(sc)}: "
           f"{_latex_escape(cap)}}}",
           f"\\label{{tab:{_latex_escape(sc)}-{metric.replace('_', '-')}}}",
           f"\\begin{{tabular}}{{{cols}}}", r"\toprule",
           " & ".join(_latex_escape(h) for h in header) + r" \\",
           r"\midrule"]
    for r in rows:
        out.append(" & ".join(_latex_escape(str(c)) for c in r) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def write(run_dir, run, rows, srows, order, figs):
    from .aggregate import stats_index
    cells = results.load_cells(run_dir)
    idx = stats_index(srows)
    doc = Doc()
    title = f"MQTT transport benchmark: run {run.get('run_id')}"
    doc.h(1, title)
    doc.p("Each cell is one scenario on one link profile with one "
          "transport, on a freshly built Mininet dumbbell (publishers on "
          "the left, Mosquitto on r1, subscribers on the right); numbers "
          "are means over repetitions with 95 % confidence intervals "
          "(Student's t). With 3 repetitions the intervals are wide: the "
          "'intervals' column says which transports' intervals overlap "
          "(no difference shown) and which do not (a<b: a's interval lies "
          "wholly below b's).")
    _metadata(doc, run, rows, cells)
    if rows:
        _calibration(doc, rows, run_dir)
    latex = ["% tables.tex: booktabs tables of run " +
             str(run.get("run_id")) + r"; \usepackage{booktabs}", ""]
    for sc in order["scenario"]:
        scrows = [r for r in rows if r["scenario"] == sc]
        if not scrows:
            continue
        doc.h(2, f"Scenario {sc}")
        text = (scrows[0]["cell"].get("scenario_file") or {}).get("text", "")
        desc = _description(text)
        if desc:
            doc.p(desc)
        _scenario_tables(doc, sc, scrows[0]["cell"], srows, order, idx,
                         figs, latex)
        for f in figs:
            if f.name.endswith(f"_{sc}") or f"_{sc}_" in f.name:
                doc.fig(f.name, f.caption)
    failed = [c for c in cells if c["status"] != "ok"]
    if failed:
        doc.h(2, "Cells that did not end ok")
        doc.table(["cell", "status", "kind", "error"],
                  [[c["id"], c["status"], c.get("failure_kind") or "-",
                    c.get("error") or "-"] for c in failed],
                  "Their processes' logs are in cells/<cell>/")
    doc.h(2, "Files")
    doc.ul(["summary.json: every cell's status and figures "
            "(runner/schema/summary.schema.json)",
            "cells/<cell>/cell.json: a cell's full record "
            "(runner/schema/cell.schema.json), with its processes' JSON "
            "and logs beside it",
            "tables/cells.csv, tables/connections.csv, tables/summary.csv: "
            "the same for pandas and R",
            "data/*.dat: what each figure plots; figures/*.png, *.svg",
            "tables.tex: these tables for LaTeX (booktabs)",
            "make figures RUN=<this folder> redraws all of it from the "
            "JSON"])
    atomic_write(os.path.join(run_dir, "REPORT.md"), doc.markdown())
    atomic_write(os.path.join(run_dir, "report.html"),
                 doc.html(os.path.join(run_dir, "figures"), title))
    atomic_write(os.path.join(run_dir, "tables.tex"), "\n".join(latex))


def _description(text):
    """A scenario file's description field."""
    import tomllib
    try:
        return tomllib.loads(text).get("description", "")
    except Exception:
        return ""


def short_table(rows, srows, order):
    """The table printed at the end of `make bench`, from the numbers the
    aggregation already has."""
    from .aggregate import stats_index, METRICS, shown_metrics
    idx = stats_index(srows)
    out = []
    for sc in order["scenario"]:
        scrows = [r for r in rows if r["scenario"] == sc]
        if not scrows:
            continue
        ms = shown_metrics(scrows[0]["cell"], [
            m for m in SHORT_METRICS
            if any(k[0] == sc and k[4] == m for k in idx)])
        if not ms:
            continue
        w = max([len("profile")] +
                [len(f"{r['profile']} {r['variant']}".strip())
                 for r in scrows]) + 2
        trs = [t for t in order["transport"]
               if any(k[0] == sc and k[3] == t for k in idx)]
        out.append(f"\n{sc}: mean [95 % CI] over repetitions")
        for m in ms:
            unit = METRICS[m][1]
            out.append(f"  {METRICS[m][2]}" + (f" ({unit})" if unit else ""))
            out.append("    " + "profile".ljust(w) +
                       "".join(t.ljust(26) for t in trs))
            for v in order["variant"]:
                for p in order["profile"]:
                    ss = [idx.get((sc, v, p, t, m)) for t in trs]
                    if not any(ss):
                        continue
                    out.append("    " + f"{p} {v}".strip().ljust(w) +
                               "".join(cell_text(s, unit).ljust(26)
                                       for s in ss))
    return "\n".join(out) + "\n" if out else "(no ok cells)\n"
