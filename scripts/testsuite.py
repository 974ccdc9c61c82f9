#!/usr/bin/python3
"""Run one test suite and record its counts, or sum the recorded suites.

  testsuite.py run NAME -- COMMAND...   run COMMAND, show its output, record
                                        passed/failed/skipped in
                                        build/test-results/NAME.json
  testsuite.py sum                      print one line per suite, then the
                                        total as "N passed, N failed, N skipped"

A suite's counts come from the last line of its output that reports them:
our C tests print "N passed, N failed"; pytest prints "N passed, N failed,
N skipped in T s". A suite that exits non-zero without reporting a failure
(a crash, a sanitizer abort, a build error) counts as one failure, so a
broken suite can never look green.
"""
import json
import os
import re
import subprocess
import sys

RESULTS = os.path.join("build", "test-results")
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)\b")


def parse_counts(text):
    counts = None
    for line in text.splitlines():
        found = COUNT.findall(line)
        kinds = {k for _, k in found}
        if "passed" in kinds or "failed" in kinds or "skipped" in kinds or \
                "error" in kinds or "errors" in kinds:
            counts = {"passed": 0, "failed": 0, "skipped": 0}
            for n, kind in found:
                if kind in ("error", "errors", "failed", "xpassed"):
                    counts["failed"] += int(n)
                elif kind == "passed":
                    counts["passed"] += int(n)
                else:
                    counts["skipped"] += int(n)
    return counts


def run(name, cmd):
    os.makedirs(RESULTS, exist_ok=True)
    print(f"=== suite {name}: {' '.join(cmd)}", flush=True)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                errors="replace")
    except OSError as e:
        out, rc = f"cannot start: {e}\n", 127
    else:
        chunks = []
        for line in proc.stdout:
            sys.stdout.write(line)
            chunks.append(line)
        rc = proc.wait()
        out = "".join(chunks)
    counts = parse_counts(out) or {"passed": 0, "failed": 0, "skipped": 0}
    note = ""
    if rc != 0 and counts["failed"] == 0:
        if rc == 5 and "no tests ran" in out:
            note = "no tests collected"
            counts["failed"] += 1
        else:
            note = f"exited with status {rc} without reporting a failure"
            counts["failed"] += 1
    rec = dict(counts, name=name, status=rc, note=note)
    with open(os.path.join(RESULTS, name + ".log"), "w") as f:
        f.write(out)
    tmp = os.path.join(RESULTS, f".{name}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(rec, f)
    os.replace(tmp, os.path.join(RESULTS, name + ".json"))
    print(f"=== suite {name}: {counts['passed']} passed, {counts['failed']} "
          f"failed, {counts['skipped']} skipped {note}", flush=True)
    return 0 if counts["failed"] == 0 else 1


def summary():
    total = {"passed": 0, "failed": 0, "skipped": 0}
    recs = []
    if os.path.isdir(RESULTS):
        for fn in sorted(os.listdir(RESULTS)):
            if fn.endswith(".json") and not fn.startswith("."):
                with open(os.path.join(RESULTS, fn)) as f:
                    recs.append(json.load(f))
    print("\n=== test summary")
    for r in recs:
        mark = "FAIL" if r["failed"] else "ok  "
        print(f"{mark} {r['name']:<32} {r['passed']:5d} passed {r['failed']:4d} "
              f"failed {r['skipped']:4d} skipped  {r.get('note', '')}")
        for k in total:
            total[k] += r[k]
    if not recs:
        print("no suite ran")
        total["failed"] += 1
    print(f"{total['passed']} passed, {total['failed']} failed, "
          f"{total['skipped']} skipped")
    return 0 if total["failed"] == 0 and total["passed"] > 0 else 1


def main(argv):
    if len(argv) >= 4 and argv[1] == "run" and argv[3] == "--":
        return run(argv[2], argv[4:])
    if len(argv) == 2 and argv[1] == "sum":
        return summary()
    print("usage: testsuite.py run NAME -- COMMAND... | testsuite.py sum",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
