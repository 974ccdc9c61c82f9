"""Scenario files: every shipped one is valid; a bad one fails with one
line naming the file and the field; the runner derives what each
subscriber should receive and each process's command line."""
import os
import textwrap
from pathlib import Path

import pytest

from runner import matrix, scenario as scn
from runner.tests.conftest import BIN, REPO, run_runner

GOOD = """
name = "{name}"
hosts = 2
[[publisher]]
name = "p"
host = "l1"
clients = 3
topic = "home/room{{n}}/t"
qos = 1
rate = 2.0
count = 4
[[subscriber]]
name = "s"
host = "r2"
topics = ["home/+/t"]
qos = 1
"""


def write(tmp_path, text, name="x"):
    p = tmp_path / f"{name}.toml"
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_shipped_scenarios_load():
    names = scn.names()
    for n in ("smart-home", "connect", "wake-publish-sleep", "throughput",
              "loss-sweep", "hol", "migration"):
        assert n in names
    for n in names:
        sc = scn.load(n)
        assert sc.publishers, n
        assert sc.text.lstrip().startswith("#"), \
            f"{n}: the file starts with a comment saying where its " \
            f"numbers come from"


def test_good_file_and_expected_count(tmp_path):
    sc = scn.load(write(tmp_path, GOOD.format(name="x")))
    sub = sc.subscribers[0]
    assert scn.expected_messages(sub, sc.publishers, "tcp") == 3 * 4
    args = scn.publisher_args(sc.publishers[0])
    assert args[args.index("--clients") + 1] == "3"
    assert args[args.index("--count") + 1] == "4"
    assert args[args.index("--topic") + 1] == "home/room{n}/t"
    assert scn.subscriber_args(sub, 12)[-2:] == ["--count", "12"]
    assert scn.subscriber_args(sub, 12, "--expect")[-2:] == ["--expect",
                                                             "12"]


def test_smart_home_expectations():
    sc = scn.load("smart-home")
    exp = {s.name: scn.expected_messages(s, sc.publishers, "tcp")
           for s in sc.subscribers}
    total = sum(p.f["clients"] * p.f["count"] for p in sc.publishers)
    assert exp["dashboard"] == total      # home/# sees every message
    climate = next(p for p in sc.publishers if p.name == "climate")
    meter = next(p for p in sc.publishers if p.name == "meter")
    assert exp["logger"] == climate.f["clients"] * climate.f["count"] + \
        meter.f["clients"] * meter.f["count"]
    qos = {p.f["qos"] for p in sc.publishers}
    assert qos == {0, 1, 2}


@pytest.mark.parametrize("change, field", [
    ('qos = 1\nrate', "publisher 'p'.qos"),          # duplicate key: syntax
    ("qos = 3", "publisher 'p'.qos"),
    ("qoss = 1", "publisher 'p'.qoss"),
    ('host = "l7"', "publisher 'p'.host"),
    ("size = 10", "publisher 'p'.size"),
    ('topic = "home/#"', "publisher 'p'.topic"),
    ("count = 4\nduration = \"5s\"", "publisher 'p'"),
    ('ramp_up = "5 parsecs"', "publisher 'p'.ramp_up"),
])
def test_bad_publisher_one_line(tmp_path, change, field):
    text = GOOD.format(name="x")
    key = change.split("=")[0].strip()
    lines = text.splitlines()
    # replace the publisher's line of that key, or add the change
    for i, l in enumerate(lines):
        if l.startswith(key + " =") and i < text.splitlines().index(
                "[[subscriber]]"):
            lines[i] = change
            break
    else:
        lines.insert(lines.index('name = "p"') + 1, change)
    path = write(tmp_path, "\n".join(lines))
    with pytest.raises(scn.ScenarioError) as e:
        scn.load(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(path)
    if "syntax" not in msg:
        assert field in msg, msg


def test_unknown_field_suggests(tmp_path):
    path = write(tmp_path, GOOD.format(name="x").replace("clients = 3",
                                                         "client = 3"))
    with pytest.raises(scn.ScenarioError) as e:
        scn.load(path)
    assert "did you mean 'clients'" in str(e.value)


def test_bad_filter_and_name(tmp_path):
    path = write(tmp_path, GOOD.format(name="x").replace(
        'topics = ["home/+/t"]', 'topics = ["home/#/t"]'))
    with pytest.raises(scn.ScenarioError, match="topic filters"):
        scn.load(path)
    path = write(tmp_path, GOOD.format(name="other"), name="y")
    with pytest.raises(scn.ScenarioError, match="file's name"):
        scn.load(path)


def test_topic_matching():
    m = scn.topic_matches
    assert m("home/#", "home/a/b/c")
    assert m("home/#", "home")          # '#' includes the parent level
    assert m("home/+/b", "home/a/b")
    assert not m("home/+/b", "home/a/c")
    assert not m("home/+", "home/a/b")
    assert m("+/+/+/light", "home/first/room1/light")
    assert not m("home/a", "home/a/b")


def test_variants_and_roles_per_variant():
    sc = scn.load("hol")
    labels = [l for l, _ in sc.variants()]
    assert len(labels) == 3 * 3 * 2 * 2
    v = dict(arm="one-connection", flows=8, delay="40ms", loss="2%")
    one = sc.apply(v)
    assert [p.name for p in one.publishers] == ["device"]
    assert one.publishers[0].f["flows"] == 8
    assert one.publishers[0].f["clients"] == 1
    assert one.link == {"delay": "40ms", "loss": "2%"}
    # eight flows on one connection: the subscriber expects all of them
    assert scn.expected_messages(one.subscribers[0], one.publishers,
                                 "tcp") == 8 * 200
    streams = sc.apply(dict(v, arm="stream-per-flow", flows=2))
    assert [(p.f["clients"], p.f["streams"])
            for p in streams.publishers] == [(2, 2)]
    assert scn.expected_messages(streams.subscribers[0],
                                 streams.publishers, "quic") == 2 * 200
    assert not sc.variant_allows({"arm": "stream-per-flow"}, "tcp")
    assert sc.variant_allows({"arm": "stream-per-flow"}, "quic")


def test_shipped_scenarios_need_nothing_unbuilt():
    """Every cell of every shipped scenario runs with the loadgen and sink
    built here: no `needs` left, every option listed by --help (hol's
    one-connection arm: --flows; migration on TCP and TLS: --migrate-after
    with --persistent)."""
    helps = {t: scn.help_options(os.path.join(BIN, t))
             for t in ("loadgen", "sink")}
    if not helps["loadgen"]:
        pytest.skip(f"{BIN}/loadgen is missing: run make first")
    names = scn.names()
    assert len(names) >= 7, names
    for name in names:
        sc = scn.load(name)
        assert sc.needs == [], (name, sc.needs)
        assert sc.transports is None, (name, sc.transports)
        for _, values in sc.variants():
            v = sc.apply(values)
            for p in v.publishers:
                assert scn.check_options(scn.publisher_args(p),
                                         helps["loadgen"], "loadgen") \
                    is None, (name, values, p.name)
            for s in v.subscribers:
                assert scn.check_options(scn.subscriber_args(s, 1),
                                         helps["sink"], "sink") is None


def test_matrix_default_and_quick():
    sel = matrix.Selection(list(matrix.DEFAULT_SCENARIOS), None, None, 3, 1)
    cells = matrix.cells(sel, ["3g", "4g", "ethernet", "wifi", "zigbee"])
    # smart-home, and connect in its two modes (full, resumed)
    assert len(cells) == 5 * 3 * (1 + 2) * 3
    assert len({c.id for c in cells}) == len(cells)
    # repetition-major: the first repetition of everything comes first
    assert [c.rep for c in cells[:45]] == [1] * 45
    assert cells[0].seed == 1 and cells[-1].seed == 3


def test_missing_options_are_named():
    line = scn.check_options(["--clients", "--flows"], {"--clients"},
                             "loadgen")
    assert "--flows" in line and "not built yet" in line
    assert scn.check_options(["--clients"], {"--clients"}, "x") is None


@pytest.mark.parametrize("args, env, msg", [
    (["bench", "--list", "--transports", "tcp,udp"], {}, "unknown transport"),
    (["bench", "--list"], {"PROFILES": "moon"}, "no such profile"),
    (["bench", "--list"], {"SCENARIOS": "nope"}, "no such scenario"),
    (["bench", "--list"], {"REPS": "0"}, "REPS"),
    (["bench", "--list", "--bogus"], {}, "unrecognized arguments"),
    (["figures", "/nonexistent"], {}, "not a run folder"),
    (["frobnicate"], {}, "unknown command"),
])
def test_user_errors_one_line(args, env, msg):
    r = run_runner(args, timeout=60, **env)
    assert r.returncode == 2, r
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert msg in r.stderr
    # argparse prints its usage first; ours is one line
    if "unrecognized" not in msg:
        assert len(lines) == 1, lines


def test_list_counts():
    r = run_runner(["bench", "--list"], timeout=60)
    assert r.returncode == 0
    # the study's five profiles, not every file in topologies/profiles
    assert r.stdout.startswith("135 cells")
    assert "__null__" not in r.stdout and "6lowpan" not in r.stdout
    r = run_runner(["bench", "--list", "--scenarios", "connect"],
                   timeout=60, PROFILES="all")
    n = len(list(Path(REPO, "topologies/profiles").glob("*.toml")))
    assert r.stdout.startswith(f"{n * 3 * 2 * 3} cells")
    r = run_runner(["bench", "--list"], timeout=60, QUICK="1")
    assert r.stdout.startswith("9 cells")
    assert "smart-home__3g__quic__r1" in r.stdout
