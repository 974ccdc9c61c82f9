"""What a run records about CPU contention, the offload settings it
checks, and the network lock it waits for. No topology is built here."""
import os
import threading
import time

import pytest

from topologies import contention, offloads, state


def linkem_stats(p99_a2b, p99_b2a, count=1000, rq=1234.5):
    def te(p99):
        return {"count": count, "p99_us": p99}
    return {"a2b": {"timing_error": te(p99_a2b)},
            "b2a": {"timing_error": te(p99_b2a)},
            "resources": {"run_queue_delay_us": rq}}


def test_cpu_shares_from_proc_stat(tmp_path):
    f = tmp_path / "stat"
    f.write_text("cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 1 2 3\n")
    before = contention.cpu_times(str(f))
    assert before == {"user": 100, "nice": 0, "system": 50, "idle": 800,
                      "iowait": 10, "irq": 0, "softirq": 0, "steal": 40}
    f.write_text("cpu  300 0 150 1000 10 0 0 140 0 0\n")
    after = contention.cpu_times(str(f))
    s = contention.cpu_shares(before, after)
    # 600 ticks: 100 stolen, 200 idle
    assert s == {"ticks": 600, "steal": pytest.approx(100 / 600),
                 "busy": pytest.approx(400 / 600)}
    assert contention.cpu_shares(None, after) is None
    assert contention.cpu_times(str(tmp_path / "nope")) is None
    assert contention.cpu_times()["idle"] > 0        # the real one


def test_a_late_emulator_is_said_in_one_line_and_in_the_record():
    links = {"bottleneck": linkem_stats(40.0, 2600.0),
             "access-l1": linkem_stats(900.0, 10.0),
             "access-r1": None}
    before = {k: 0 for k in contention.CPU_FIELDS}
    after = dict(before, user=700, idle=200, steal=100)
    rec, line = contention.summary(links, before, after, limit_us=250)
    assert rec["emulator_late"] is True
    assert rec["late"] == [
        {"link": "access-l1", "direction": "left_to_right", "p99_us": 900.0},
        {"link": "bottleneck", "direction": "right_to_left",
         "p99_us": 2600.0}]
    assert rec["timing_error_p99_us"]["bottleneck"] == \
        {"left_to_right": 40.0, "right_to_left": 2600.0}
    assert rec["linkem_run_queue_delay_us"]["bottleneck"] == 1234.5
    assert rec["cpu"]["steal"] == pytest.approx(0.1)
    assert "\n" not in line
    assert line.startswith("warning: the link emulator kept its schedule "
                           "badly: timing error p99 2600 us on bottleneck "
                           "right_to_left and 1 more (limit 250 us); CPU "
                           "steal 10.0 %")


def test_an_emulator_on_time_says_nothing():
    rec, line = contention.summary({"bottleneck": linkem_stats(40, 60)},
                                   None, None, limit_us=250)
    assert line is None and rec["emulator_late"] is False
    assert rec["cpu"] is None
    # too few frames to judge: not judged
    rec, line = contention.summary(
        {"bottleneck": linkem_stats(5000, 5000, count=3)}, None, None)
    assert line is None and rec["timing_error_p99_us"] == {}


ETHTOOL_K = """Features for v0:
rx-checksumming: on
tx-checksumming: on
\ttx-checksum-ip-generic: on
scatter-gather: on
tcp-segmentation-offload: on
\ttx-tcp-segmentation: on
\ttx-tcp6-segmentation: off [requested on]
generic-segmentation-offload: on
generic-receive-offload: off
large-receive-offload: off [fixed]
tx-udp-segmentation: on
tx-gso-list: on
rx-gro-list: off
rx-udp-gro-forwarding: off
rx-gro-hw: off [fixed]
highdma: on
"""


def test_offloads_to_turn_off():
    f = offloads.parse_features(ETHTOOL_K)
    assert f["large-receive-offload"] == (False, True)
    assert f["tx-tcp6-segmentation"] == (False, False)
    names = offloads.to_turn_off(f)
    # every merging offload the device lets us change; not fixed ones,
    # not unrelated ones (scatter-gather, receive checksums, highdma)
    assert names == ["tx", "tso", "tx-tcp-segmentation",
                     "tx-tcp6-segmentation", "gso", "gro",
                     "tx-udp-segmentation", "tx-gso-list", "rx-gro-list",
                     "rx-udp-gro-forwarding"]
    assert offloads.still_on(f) == [
        "tx-checksumming", "tcp-segmentation-offload", "tx-tcp-segmentation",
        "generic-segmentation-offload", "tx-udp-segmentation", "tx-gso-list"]


def test_offloads_that_stay_on_fail(monkeypatch):
    import subprocess

    def run(argv):
        # a device that ignores -K and lets gso_max_segs be set
        out = ETHTOOL_K if argv[:2] == ["ethtool", "-k"] else \
            '[{"gso_max_segs": 1}]'
        return subprocess.CompletedProcess(argv, 0, out, "")
    with pytest.raises(offloads.OffloadError) as ei:
        offloads.turn_off("v0", run)
    assert str(ei.value).startswith("v0: cannot turn off tx-checksumming, "
                                    "tcp-segmentation-offload")


# ---- the network lock -----------------------------------------------------

def test_lock_is_exclusive_and_waits_with_one_line(tmp_path):
    holder = state.Lock(str(tmp_path))
    holder.acquire()
    lines = []
    other = state.Lock(str(tmp_path))
    # no wait: at once, saying who holds it
    t0 = time.monotonic()
    with pytest.raises(state.Busy) as ei:
        other.acquire(0)
    assert time.monotonic() - t0 < 0.5
    assert f"pid {os.getpid()}" in str(ei.value)
    # a wait that ends when the holder lets go
    t = threading.Timer(0.4, holder.release)
    t.start()
    t0 = time.monotonic()
    other.acquire(10, log=lines.append)
    waited = time.monotonic() - t0
    t.join()
    assert 0.3 < waited < 5
    assert len(lines) == 1 and lines[0].startswith(
        f"waiting: another run (pid {os.getpid()}) holds the test network "
        f"({tmp_path}/lock); waiting up to 10 s")
    assert other.fd is not None
    with open(tmp_path / "lock") as f:
        assert f.read() == f"{os.getpid()}\n"
    other.release()


def test_lock_wait_times_out_with_a_clear_error(tmp_path):
    holder = state.Lock(str(tmp_path))
    holder.acquire()
    lines = []
    t0 = time.monotonic()
    with pytest.raises(state.Busy) as ei:
        state.Lock(str(tmp_path)).acquire(0.5, log=lines.append)
    assert 0.45 < time.monotonic() - t0 < 3
    assert str(ei.value) == (
        f"another run (pid {os.getpid()}) held the test network for 0.5 s; "
        f"try again when it has ended (or wait longer: --lock-timeout, "
        f"MQB_LOCK_TIMEOUT)")
    assert len(lines) == 1
    holder.release()
    state.Lock(str(tmp_path)).acquire(0)      # free again


def test_lock_timeout_default(monkeypatch):
    monkeypatch.setenv("MQB_LOCK_TIMEOUT", "12.5")
    assert state.lock_timeout_default() == 12.5
    monkeypatch.setenv("MQB_LOCK_TIMEOUT", "soon")
    assert state.lock_timeout_default() == state.LOCK_TIMEOUT_S
    monkeypatch.delenv("MQB_LOCK_TIMEOUT")
    assert state.lock_timeout_default() == state.LOCK_TIMEOUT_S
