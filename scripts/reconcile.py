#!/usr/bin/env python3
"""Reconcile what the sinks received with what the load generators wrote.

A sink alone cannot see the messages after the last one it received, nor a
publisher it never heard from: its own "lost" is highest + 1 - unique. Set
against the load generators' documents, every message is accounted for.
For every pair of a sink and a publisher whose topic one of the sink's
filters matches:

  queued      messages the publisher handed to its MQTT engine
  written     of those, messages the transport took whole (loadgen's
              "written": the engine's pub_written); sequence numbers
              0 .. written - 1, since a stream keeps their order
  received    distinct sequence numbers the sink got from it
  lost        written - received: written, never delivered, split by
              where in the sequence they were missing:
                head    before the first one received (in arrival
                        order)
                middle  between the first and the highest received
                tail    after the highest received (a sink cannot see
                        these by itself)
              a publisher the sink never heard from loses all it wrote
  unwritten   queued - written: never left the publisher's process;
              counted apart, as "connection_lost" when its connection
              died (loadgen state "lost"), else "other" (the run ended
              first); never part of "lost"
  duplicates  messages the sink got more than once

Pairs are grouped by effective QoS: the lower of the publisher's QoS and
the QoS the broker granted the best matching filter. Also reported: silent
publishers (wrote something, the sink got nothing), publishers the sink
heard that no load generator describes (another run's, or an id collision),
publisher ids that two load generators share (the figures cannot be
trusted: status "failed"), and anomalies (a sink that received a sequence
number that was never written).

Python 3 standard library only. As a command:

  scripts/reconcile.py [--json OUT] DOCUMENT...
  /usr/bin/python3 -m scripts.reconcile [--json OUT] DOCUMENT...

DOCUMENTs are loadgen and sink JSON files, told apart by their "tool"
field. Without --json the result goes to stdout; with it, the file is
written atomically and one summary line goes to stdout. Exit status: 0 when
reconciled (loss is a measurement, not an error), 1 when a document cannot
be read or the figures cannot be trusted (id collisions), 2 for a usage
error. As a module: reconcile(loadgens, sinks) takes the parsed documents
and returns the result as a dict.
"""
import argparse
import json
import os
import sys
import tempfile

SCHEMA = 1
LIST_MAX = 1000  # entries in each list of the result; counts stay exact


def topic_matches(filt, topic):
    """MQTT topic matching: '+' one level, '#' the rest (and the parent
    level itself); wildcards at the first level skip '$' topics."""
    if topic.startswith("$") and filt[:1] in ("+", "#"):
        return False
    f, t = filt.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


def _publishers(doc, warnings):
    """[(id, topic, qos, state, queued, written)] of a loadgen document."""
    qos = doc["config"]["connection"]["qos"]
    pubs = doc.get("publishers")
    if pubs is None:
        # an older loadgen: no written count; take queued as written
        warnings.append("a loadgen document has no 'publishers' list "
                        "(older loadgen): written taken as queued")
        return [(c["publisher_id"], c["topic"], qos, c["state"],
                 c.get("sent", 0), c.get("sent", 0))
                for c in doc.get("connections") or []]
    return [(p["id"], p["topic"], qos, p["state"], p["queued"],
             p["written"]) for p in pubs]


def _sink_filters(doc):
    """[(filter, granted QoS or None)] of a sink document."""
    sub = (doc.get("subscription") or {}).get("filters")
    if sub:
        return [(f["filter"], f.get("granted_qos")) for f in sub]
    asked = doc["config"]["connection"]["qos"]
    return [(f, asked) for f in doc["config"].get("filters") or []]


def _group():
    return {"pairs": 0, "expected": 0, "received": 0, "lost": 0,
            "lost_head": 0, "lost_middle": 0, "lost_tail": 0,
            "duplicates": 0, "silent_publishers": 0}


def _add(dst, src):
    for k, v in src.items():
        dst[k] += v


def _capped(lst, item):
    if len(lst) < LIST_MAX:
        lst.append(item)


def reconcile(loadgens, sinks, match=topic_matches):
    """Reconcile parsed loadgen and sink documents; returns a dict (see the
    module's comment for the figures)."""
    errors, warnings = [], []
    pubs = {}      # id -> (topic, qos, state, queued, written)
    collisions = []
    unwritten = {"connection_lost": 0, "other": 0}
    queued = written = 0
    for d in loadgens:
        for pid, topic, qos, state, q, w in _publishers(d, warnings):
            if pid in pubs:
                _capped(collisions, pid)
                continue
            pubs[pid] = (topic, qos, state, q, w)
            queued += q
            written += w
            unwritten["connection_lost" if state == "lost" else "other"] \
                += max(0, q - w)
    if collisions:
        errors.append(f"{len(collisions)} publisher id(s) appear in more "
                      "than one loadgen document (e.g. "
                      f"{collisions[0]}): give the processes disjoint "
                      "--id-base ranges or the default random ids")

    total = _group()
    by_qos = {str(q): _group() for q in (0, 1, 2)}
    per_sink, silent, lossy, unknown, anomalies = [], [], [], [], []
    truncated = False
    for si, s in enumerate(sinks):
        filters = _sink_filters(s)
        sink_qos = s["config"]["connection"]["qos"]
        seq = s.get("sequence") or {}
        truncated |= bool(seq.get("per_publisher_truncated"))
        heard = {p["publisher"]: p for p in seq.get("per_publisher") or []}
        g = _group()
        for pid, (topic, pq, state, q, w) in pubs.items():
            granted = [gq if gq is not None else sink_qos
                       for f, gq in filters if match(f, topic)]
            if not granted:
                continue
            eff = min(pq, max(granted))
            p = heard.get(pid)
            one = _group()
            one["pairs"] = 1
            one["expected"] = w
            if p is None:
                one["lost"] = one["lost_tail"] = w
                if w > 0:
                    one["silent_publishers"] = 1
                    _capped(silent, {"sink": si, "publisher": pid,
                                     "topic": topic, "written": w,
                                     "state": state})
            else:
                got = min(p["unique"], w)
                one["received"] = got
                one["duplicates"] = p["duplicates"]
                one["lost"] = w - got
                # the sink's own "lost" covers 0 .. highest: head + middle
                # (first: the first to arrive; a later, lower one
                # counts as middle, never twice)
                tail = min(max(0, w - 1 - p["highest"]), one["lost"])
                head = min(p["first"], one["lost"] - tail)
                one["lost_head"] = head
                one["lost_tail"] = tail
                one["lost_middle"] = max(0, one["lost"] - head - tail)
                if p["highest"] >= w or p["unique"] > w:
                    _capped(anomalies, {
                        "sink": si, "publisher": pid, "written": w,
                        "highest_received": p["highest"],
                        "unique_received": p["unique"],
                        "what": "received sequence numbers that were "
                                "never written"})
            if one["lost"]:
                _capped(lossy, {"sink": si, "publisher": pid,
                                "topic": topic, "qos": eff,
                                "written": w, "received": one["received"],
                                "lost": one["lost"],
                                "lost_tail": one["lost_tail"],
                                "state": state})
            _add(g, one)
            _add(by_qos[str(eff)], one)
        for pid, p in heard.items():
            if pid not in pubs:
                _capped(unknown, {"sink": si, "publisher": pid,
                                  "unique_received": p["unique"]})
        _add(total, g)
        per_sink.append(dict(g, sink=si,
                             stop_reason=s.get("stop_reason"),
                             drain=s.get("drain")))
    if truncated:
        warnings.append("a sink listed only part of its publishers "
                        "(per_publisher_truncated): the others count as "
                        "silent")
    for g in [total] + list(by_qos.values()):
        g["delivered_ratio"] = (g["received"] / g["expected"]
                                if g["expected"] else None)
    return {
        "tool": "reconcile", "schema": SCHEMA,
        "status": "failed" if errors else "ok",
        "errors": errors, "warnings": warnings,
        "inputs": {"loadgens": len(loadgens), "sinks": len(sinks)},
        "publishers": {"count": len(pubs), "queued": queued,
                       "written": written, "unwritten": unwritten,
                       "id_collisions": collisions},
        "totals": total,
        "by_qos": by_qos,
        "per_sink": per_sink,
        "silent_publishers": silent,
        "lossy_pairs": lossy,
        "unknown_publishers": unknown,
        "anomalies": anomalies,
        "lists_capped_at": LIST_MAX,
    }


def load(paths):
    """Read documents; returns (loadgens, sinks). Raises ValueError with
    one line for an unreadable file or an unknown tool."""
    loadgens, sinks = [], []
    for path in paths:
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read '{path}': {e}") from None
        tool = doc.get("tool") if isinstance(doc, dict) else None
        if tool == "loadgen":
            loadgens.append(doc)
        elif tool == "sink":
            sinks.append(doc)
        else:
            raise ValueError(f"'{path}' is neither a loadgen nor a sink "
                             f"document (tool: {tool!r})")
    return loadgens, sinks


def write_atomic(path, text):
    """Write text to path through a temporary file and a rename."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".reconcile-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def summary(r):
    t = r["totals"]
    return (f"reconcile: {t['pairs']} sink/publisher pairs, written "
            f"{t['expected']}, received {t['received']}, lost {t['lost']} "
            f"(tail {t['lost_tail']}), duplicates {t['duplicates']}, "
            f"silent publishers {t['silent_publishers']}, never written "
            f"{sum(r['publishers']['unwritten'].values())}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """A usage error is one line and exit status 2."""
        self.exit(2, f"reconcile: error: {message} (see --help)\n")


def main(argv=None):
    ap = _Parser(
        prog="reconcile",
        description="Reconcile sinks with load generators: lost = written "
                    "- received per publisher (see the module comment).")
    ap.add_argument("documents", nargs="+", metavar="DOCUMENT",
                    help="loadgen and sink JSON documents")
    ap.add_argument("--json", metavar="OUT",
                    help="write the result here (atomically)")
    a = ap.parse_args(argv)
    try:
        loadgens, sinks = load(a.documents)
    except ValueError as e:
        print(f"reconcile: error: {e}", file=sys.stderr)
        return 1
    if not loadgens or not sinks:
        print("reconcile: error: needs at least one loadgen and one sink "
              "document", file=sys.stderr)
        return 2
    r = reconcile(loadgens, sinks)
    text = json.dumps(r, indent=1) + "\n"
    if a.json:
        try:
            write_atomic(a.json, text)
        except OSError as e:
            print(f"reconcile: error: cannot write '{a.json}': {e}",
                  file=sys.stderr)
            return 1
        print(summary(r))
    else:
        sys.stdout.write(text)
    if r["errors"]:
        print(f"reconcile: error: {r['errors'][0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
