"""scripts/calibrate.py: what its table says, and how it ends when it
cannot run or is stopped. (The calibration itself is `make calibrate`.)"""
import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from topologies import state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "calibrate.py")


def _module():
    spec = importlib.util.spec_from_file_location("calibrate", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_markdown_says_first_that_the_queue_was_forced():
    cal = _module()
    doc = {"profiles": [], "started_at": "x", "seed": 1, "versions": {}}
    lines = cal.markdown(doc).splitlines()
    # one sentence above the table, so it travels with it when copied
    assert lines[0].startswith(
        "Rate and loss are measured with every queue forced to 10,000 "
        "frames, not the profile's own"), lines[0]
    assert lines[1] == ""
    assert lines[2].startswith("| profile | backend |")
    assert "rate expected (Mb/s)" in lines[2]
    assert cal.LOSS_QUEUE == 10000


def _run(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env=env)


def test_unusable_out_is_one_line(root, tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = _run("--profile", "zigbee", "--out", str(f / "sub"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: --out {f / 'sub'}: cannot write "
                               f"results there: Not a directory")


def test_missing_measuring_tool_is_one_line(root, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ping").symlink_to("/usr/bin/ping")
    r = _run("--profile", "zigbee", "--out", str(tmp_path / "out"),
             env=dict(os.environ, PATH=str(bindir)))
    assert r.returncode == 1, r.stderr
    assert r.stderr == ("error: missing command iperf3: install the Debian "
                        "package iperf3 (apt-get install iperf3, or make "
                        "deps)\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sig,code,line", [
    (signal.SIGTERM, 143, "error: terminated by SIGTERM (no results "
     "written)"),
    (signal.SIGINT, 130, "error: interrupted (no results written)"),
])
def test_signal_during_the_baseline(linkem, tmp_path, sig, code, line):
    """Stopped while it measures the testbed's own RTT (before any
    profile): one line, the signal's exit status, the topology gone and
    the empty results folder it made removed."""
    out = tmp_path / "out"
    # SIGINT as the default, so Python turns it into KeyboardInterrupt
    # even where the test runs with SIGINT ignored (a background job).
    p = subprocess.Popen(
        [sys.executable, SCRIPT, "--profile", "zigbee", "--backend",
         "userspace", "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    path = os.path.join(state.STATE_DIR, f"{p.pid}.json")
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        assert time.monotonic() < deadline and p.poll() is None, \
            p.communicate()
        time.sleep(0.01)
    time.sleep(0.4)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == line, err
    assert not out.exists()
    deadline = time.monotonic() + 3
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [n for n in os.listdir(state.STATE_DIR)
            if n.startswith(f"{p.pid}.")] == []
    assert not [n for n in os.listdir("/sys/class/net")
                if state.OUR_NAME_RE.match(n)]


def test_readme_table_is_replaced_between_its_markers(tmp_path):
    cal = _module()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{cal.README_BEGIN}\nold table\n"
                      f"{cal.README_END}\nafter\n")
    doc = {"profiles": [], "started_at": "20261130-010203", "seed": 1,
           "versions": {"kernel": "6.18"}, "backend": "auto", "pass": True,
           "seconds": 12.3}
    cal.update_readme(str(readme), doc)
    text = readme.read_text()
    assert "old table" not in text
    assert text.startswith(f"# x\n\nbefore\n{cal.README_BEGIN}\nMeasured by "
                           f"`make calibrate` on 20261130-010203 (kernel "
                           f"6.18, ")
    assert "every check passed." in text
    assert "| profile | backend |" in text
    assert text.endswith(f"{cal.README_END}\nafter\n")
    # the project's README has the markers make calibrate needs
    with open(os.path.join(REPO, "README.md")) as f:
        real = f.read()
    assert real.index(cal.README_BEGIN) < real.index(cal.README_END)
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(cal._SaveError):
        cal.update_readme(str(tmp_path / "bare.md"), doc)
