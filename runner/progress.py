"""Progress of a run: on a terminal one status line that updates (cell i
of n, what runs now, elapsed, ETA) with finished cells printed above it;
elsewhere, and always in run.log, plain lines."""
import os
import sys
import threading
import time

from .results import iso_now


def fmt_s(s):
    if s is None:
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    def __init__(self, total, log_path, out=sys.stdout, tty=None):
        self.total = total
        self.log_f = open(log_path, "a", buffering=1)
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.t0 = time.monotonic()
        self.i = 0
        self.current = None
        self.cell_t0 = None
        self.durations = {}       # (scenario, transport) -> [seconds]
        self.remaining = []       # cells still to run, for the ETA
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = None
        if self.tty:
            self.thread = threading.Thread(target=self._tick, daemon=True)
            self.thread.start()

    def log(self, msg):
        """A plain line: in the log with a time stamp, on the output."""
        with self.lock:
            self.log_f.write(f"{iso_now()} {msg}\n")
            if self.tty:
                self.out.write("\r\033[K")
            self.out.write(msg + "\n")
            if self.tty and self.current:
                self.out.write(self._status())
            self.out.flush()

    def eta(self):
        left = 0.0
        allv = [d for v in self.durations.values() for d in v]
        if not allv:
            return None
        for c in self.remaining:
            v = self.durations.get((c.scenario, c.transport)) or \
                [d for (s, _), ds in self.durations.items()
                 if s == c.scenario for d in ds] or allv
            left += sum(v) / len(v)
        if self.cell_t0 is not None and self.current is not None:
            v = self.durations.get((self.current.scenario,
                                    self.current.transport))
            if v:
                left += max(0.0, sum(v) / len(v) -
                            (time.monotonic() - self.cell_t0))
        return left

    def _status(self):
        el = time.monotonic() - self.t0
        c = self.current
        what = c.label() if c else ""
        return (f"[cell {self.i}/{self.total}] {what} | elapsed "
                f"{fmt_s(el)} | ETA {fmt_s(self.eta())}")

    def _tick(self):
        while not self.stop.wait(1.0):
            with self.lock:
                if self.current:
                    self.out.write("\r\033[K" + self._status())
                    self.out.flush()

    def start(self, i, cell, remaining):
        self.i, self.current = i, cell
        self.remaining = remaining
        self.cell_t0 = time.monotonic()
        with self.lock:
            self.log_f.write(f"{iso_now()} cell {i}/{self.total} start "
                             f"{cell.id} (elapsed "
                             f"{fmt_s(time.monotonic() - self.t0)}, ETA "
                             f"{fmt_s(self.eta())})\n")
            if self.tty:
                self.out.write("\r\033[K" + self._status())
                self.out.flush()
            else:
                self.out.write(f"cell {i}/{self.total}: {cell.label()} ...\n")
                self.out.flush()

    def end(self, cell, result):
        d = time.monotonic() - self.cell_t0
        if result.get("failure_kind") != "not-built":
            self.durations.setdefault((cell.scenario, cell.transport),
                                      []).append(d)
        st = result["status"]
        err = f": {result['error']}" if result.get("error") else ""
        cur, self.current = self.current, None
        self.log(f"cell {self.i}/{self.total} {st} {cur.label()} "
                 f"({d:.1f} s){err}")

    def close(self):
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=2)
        with self.lock:
            if self.tty:
                self.out.write("\r\033[K")
                self.out.flush()
        self.log_f.close()


def isatty(f):
    try:
        return os.isatty(f.fileno())
    except (OSError, ValueError, AttributeError):
        return False
