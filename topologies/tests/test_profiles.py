"""Profile files: the shipped five, and every way a file can be wrong."""
import os
import re
import subprocess
import sys

import pytest

from topologies import profiles
from topologies.profiles import ProfileError, load_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# The dissertation's table: rate (bit/s), one-way delay (us), loss.
TABLE = {
    "wifi": (30_000_000, 10_000, 0.02),
    "zigbee": (250_000, 5_000, 0.01),
    "4g": (4_000_000, 20_000, 0.015),
    "3g": (1_000_000, 40_000, 0.015),
    "ethernet": (100_000_000, 1_000, 0.002),
}

GOOD = 'rate = "1Mbit"\ndelay = "10ms"\nloss = "1%"\n'


def text_with(**fields):
    """GOOD with fields replaced or added (values as TOML source)."""
    base = {"rate": '"1Mbit"', "delay": '"10ms"', "loss": '"1%"'}
    base.update(fields)
    return "".join(f"{k} = {v}\n" for k, v in base.items())


def write(tmp_path, name, text):
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return p


def expect_error(tmp_path, name, text, field, *words):
    """Loading must fail with one line naming file, profile and field."""
    p = write(tmp_path, name, text)
    with pytest.raises(ProfileError) as ei:
        load_file(p)
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"{name}.toml" in msg
    assert f'profile "{name}"' in msg
    assert f'field "{field}"' in msg
    assert ei.value.field == field
    for w in words:
        assert w in msg, msg
    return msg


# Shipped besides the dissertation's five.
EXTRA = ("null", "zigbee-6lowpan")


def test_shipped_profiles_are_the_table():
    loaded = profiles.load_all()
    assert sorted(loaded) == sorted(list(TABLE) + list(EXTRA))
    for name, (rate, delay, loss) in TABLE.items():
        p = loaded[name]
        assert p.applies == ("bottleneck",)
        assert p.symmetric()
        d = p.left_to_right
        assert (d.rate_bps, d.delay_us, d.jitter_us) == (rate, delay, 0)
        assert d.loss == pytest.approx(loss, abs=1e-12)
        assert d.loss_model == "bernoulli" and d.ge is None
        assert d.queue_packets is not None and d.queue_bytes is None
        # no framing: the dissertation's links are plain rate pipes
        assert (d.packet_overhead, d.cell_size, d.cell_overhead) == \
            (0, 0, 0) and not d.loss_per_cell


def test_the_five_profiles_are_unchanged():
    """The dissertation's profiles stay exactly as they were (their
    digests), whatever else is added."""
    want = {
        "3g": "11fd6d407f77210f", "4g": "af83c05fa2ea6ae6",
        "ethernet": "9255f5832a3e5f3b",
        "wifi": "e44e265576306f8b", "zigbee": "21a7d6edf065dc67",
    }
    got = {n: profiles.load_profile(n).sha256[:16] for n in want}
    assert got == want


def test_null_profile_shapes_nothing():
    d = profiles.load_profile("null").left_to_right
    assert (d.rate_bps, d.delay_us, d.jitter_us, d.loss) == (0, 0, 0, 0.0)
    assert d.serialisation_us(1514) == 0.0
    assert profiles.load_profile("null").symmetric()


def test_zigbee_6lowpan_framing():
    """802.15.4 frames of 104 bytes of packet each, sent as 146: a
    1294-byte frame (a 1280-byte IPv6-sized packet) is 13 radio frames,
    lost with 1 - 0.99^13; a ping frame is one radio frame."""
    p = profiles.load_profile("zigbee-6lowpan")
    d = p.left_to_right
    assert (d.rate_bps, d.delay_us) == (250_000, 5_000)
    assert (d.packet_overhead, d.cell_size, d.cell_overhead) == \
        (-14, 104, 42)
    assert d.loss_per_cell and d.loss == pytest.approx(0.01)
    assert d.cells(1294) == 13 and d.wire_bytes(1294) == 13 * 146
    assert d.frame_loss(1294) == pytest.approx(1 - 0.99 ** 13)
    assert d.cells(98) == 1 and d.frame_loss(98) == pytest.approx(0.01)
    assert d.serialisation_us(98) == pytest.approx(146 * 8 / 0.25)
    # the link's frame rate for full-size frames: 15 cells of 146 bytes
    assert d.frame_rate_bps(1514) == pytest.approx(250_000 * 1514 / 2190)


def test_shipped_queues_follow_the_documented_rule():
    # 2 x BDP at the base RTT in 1514-byte frames, >= 20, up to a
    # multiple of 10 (README.md).
    for name in TABLE:
        d = profiles.load_profile(name).left_to_right
        bdp = d.rate_bps * 2 * d.delay_us / 1e6 / 8 / 1514
        want = max(20, -(-int(2 * bdp * 1000) // 1000))
        want = -(-want // 10) * 10
        assert d.queue_packets == want, name


def test_unknown_key(tmp_path):
    msg = expect_error(tmp_path, "typo", GOOD + 'rat = "2Mbit"\n', "rat",
                       "unknown field")
    assert '"rate"' in msg       # the suggestion


def test_unknown_key_in_direction_table(tmp_path):
    expect_error(tmp_path, "dtypo", GOOD + '[left_to_right]\ndelya = "1ms"\n',
                 "left_to_right.delya", "unknown field")


@pytest.mark.parametrize("field,value,words", [
    ("rate", '"30MB"', ("ambiguous",)),
    ("rate", '"30kbps"', ("ambiguous",)),
    ("rate", '"30 furlongs"', ("unknown rate unit",)),
    ("delay", '"10"', ("unit is required",)),
    ("delay", '"10 minutes"', ("unknown time unit",)),
    ("loss", '"0.02"', ("percentage",)),
    ("queue", '"100"', ("unknown queue unit",)),
    ("rate", "30000000", ("expected a string with a unit",)),
])
def test_wrong_unit(tmp_path, field, value, words):
    expect_error(tmp_path, "unit", text_with(**{field: value}), field,
                 *words)


@pytest.mark.parametrize("field,value", [
    ("rate", '"-1Mbit"'), ("delay", '"-5ms"'), ("loss", '"-1%"'),
    ("jitter", '"-1ms"'), ("queue", '"-10 packets"'),
])
def test_negative(tmp_path, field, value):
    expect_error(tmp_path, "neg", text_with(**{field: value}), field,
                 "negative")


@pytest.mark.parametrize("field,value", [
    ("rate", '"20Gbit"'), ("rate", '"10bit"'), ("delay", '"1000s"'),
    ("loss", '"150%"'), ("loss", '"100%"'), ("queue", '"10000000 packets"'),
    ("queue", '"100B"'), ("jitter", '"20ms"'),
])
def test_absurd(tmp_path, field, value):
    msg = expect_error(tmp_path, "absurd", text_with(**{field: value}), field)
    assert "out of range" in msg or "exceeds the delay" in msg


@pytest.mark.parametrize("missing", ["rate", "delay", "loss"])
def test_missing_field(tmp_path, missing):
    text = "".join(ln + "\n" for ln in GOOD.splitlines()
                   if not ln.startswith(missing))
    expect_error(tmp_path, "short", text, missing, "missing")


def test_syntax_error_names_the_line_and_its_key(tmp_path):
    text = 'rate = "1Mbit"\ndelay = 10ms"\nloss = "1%"\n'
    expect_error(tmp_path, "broken", text, "delay", "TOML syntax error",
                 "line 2")


def test_syntax_error_without_a_key_still_one_line(tmp_path):
    p = write(tmp_path, "junk", GOOD + "[[[\n")
    with pytest.raises(ProfileError) as ei:
        load_file(p)
    assert "\n" not in str(ei.value)
    assert "junk.toml" in str(ei.value) and "TOML syntax error" in \
        str(ei.value)


def test_cli_reports_a_bad_file_in_one_line_and_fails(tmp_path):
    p = write(tmp_path, "bad", GOOD.replace('"10ms"', '"10 parsecs"'))
    r = subprocess.run([sys.executable, "-m", "topologies.dumbbell",
                        "--profile", str(p)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    assert "bad.toml" in lines[0] and 'profile "bad"' in lines[0] and \
        'field "delay"' in lines[0]


def test_units_are_exact():
    assert profiles.parse_rate("250kbit") == 250_000
    assert profiles.parse_rate("0.25Mbit") == 250_000
    assert profiles.parse_rate("1.5gbit/s") == 1_500_000_000
    assert profiles.parse_time("500us") == 500
    assert profiles.parse_time("0.5ms") == 500
    assert profiles.parse_time("0ms") == 0
    assert profiles.parse_percent("1.5%") == pytest.approx(0.015)
    assert profiles.parse_queue("64KiB") == ("bytes", 65536)
    assert profiles.parse_queue("20 packets") == ("packets", 20)
    with pytest.raises(profiles._ValueError):
        profiles.parse_time("0.5us")          # finer than 1 us
    with pytest.raises(profiles._ValueError):
        profiles.parse_rate("1.0005kbit")     # fraction of a bit/s


def test_defaults(tmp_path):
    p = load_file(write(tmp_path, "plain", GOOD))
    d = p.left_to_right
    assert d.queue_packets == 1000 and d.jitter_us == 0
    assert p.applies == ("bottleneck",)


def test_direction_override(tmp_path):
    p = load_file(write(tmp_path, "asym", GOOD + '[left_to_right]\n'
                        'rate = "250kbit"\nqueue = "3000B"\n'))
    assert p.left_to_right.rate_bps == 250_000
    assert p.left_to_right.queue_bytes == 3000
    assert p.left_to_right.queue_packets is None
    assert p.right_to_left.rate_bps == 1_000_000
    assert p.right_to_left.queue_packets == 1000
    assert p.left_to_right.delay_us == p.right_to_left.delay_us == 10_000
    assert not p.symmetric()


def test_gilbert_elliott(tmp_path):
    text = ('rate = "4Mbit"\ndelay = "20ms"\nloss_model = "gilbert-elliott"'
            '\n[gilbert_elliott]\np = "1%"\nr = "25%"\nloss_bad = "100%"\n'
            'loss_good = "0%"\n')
    d = load_file(write(tmp_path, "ge", text)).left_to_right
    assert d.loss_model == "gilbert-elliott"
    assert d.ge.p == pytest.approx(0.01) and d.ge.r == pytest.approx(0.25)
    assert d.loss == pytest.approx(0.01 / 0.26)
    # Bursts make the count of losses vary more than a binomial's.
    assert d.ge.count_variance(10000) > 10000 * d.loss * (1 - d.loss)
    msg = expect_error(tmp_path, "gebad", text.replace(
        'loss_model', 'loss = "1%"\nloss_model'), "loss", "disagrees")
    assert "3.846%" in msg
    expect_error(tmp_path, "gemiss", text.replace('r = "25%"\n', ''),
                 "gilbert_elliott.r", "missing")
    expect_error(tmp_path, "genotab", 'rate = "4Mbit"\ndelay = "20ms"\n'
                 'loss_model = "gilbert-elliott"\n', "gilbert_elliott",
                 "missing")


def test_applies(tmp_path):
    p = load_file(write(tmp_path, "acc", GOOD +
                        'applies = ["access", "bottleneck"]\n'))
    assert p.applies == ("bottleneck", "access")
    expect_error(tmp_path, "accbad", GOOD + 'applies = ["uplink"]\n',
                 "applies", "not a link")


def test_adding_a_profile_is_adding_a_file(tmp_path):
    write(tmp_path, "lora", 'rate = "5kbit"\ndelay = "100ms"\nloss = "5%"\n')
    assert profiles.profile_names(tmp_path) == ["lora"]
    assert profiles.load_profile("lora", tmp_path).left_to_right.rate_bps \
        == 5000
    with pytest.raises(ProfileError) as ei:
        profiles.load_profile("nbiot", tmp_path)
    assert "lora" in str(ei.value)     # lists what exists


def test_readme_examples_parse(tmp_path):
    readme = open(os.path.join(profiles.PROFILE_DIR, "README.md")).read()
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    for i, text in enumerate(blocks):
        if "loss" not in text:       # the override fragment needs a base
            text = GOOD + text
        load_file(write(tmp_path, f"example{i}", text))
    ge = load_file(write(tmp_path, "bursty", blocks[0]))
    assert ge.left_to_right.loss == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize("extra,field,words", [
    ('cell_overhead = "42B"\n', "cell_overhead", ("without cell_size",)),
    ('loss_unit = "cell"\n', "loss_unit", ("needs cell_size",)),
    ('loss_unit = "packet"\n', "loss_unit", ("not a loss unit",)),
    ('cell_size = "104"\n', "cell_size", ("in bytes",)),
    ('cell_size = "0B"\n', "cell_size", ("out of range",)),
    ('cell_size = "10B"\ncell_overhead = "-10B"\n', "cell_overhead",
     ("out of range",)),
    ('packet_overhead = "-70000B"\n', "packet_overhead", ("out of range",)),
    ('packet_overhead = "1.5B"\n', "packet_overhead", ("whole number",)),
])
def test_framing_errors(tmp_path, extra, field, words):
    expect_error(tmp_path, "frm", GOOD + extra, field, *words)


def test_loss_per_cell_needs_bernoulli(tmp_path):
    expect_error(tmp_path, "gec",
                 'rate = "1Mbit"\ndelay = "1ms"\ncell_size = "100B"\n'
                 'loss_model = "gilbert-elliott"\nloss_unit = "cell"\n'
                 '[gilbert_elliott]\np = "1%"\nr = "25%"\nloss_bad = "100%"\n'
                 'loss_good = "0%"\n', "loss_unit", "bernoulli")


def test_unlimited_rate(tmp_path):
    p = load_file(write(tmp_path, "unl", text_with(rate='"unlimited"')))
    assert p.left_to_right.rate_bps == 0
    expect_error(tmp_path, "unl2", text_with(rate='"unlimited"') +
                 'packet_overhead = "10B"\n', "rate", "unlimited")


def test_framing_per_direction(tmp_path):
    p = load_file(write(tmp_path, "asym", GOOD + '[right_to_left]\n'
                        'packet_overhead = "24B"\n'))
    assert p.right_to_left.packet_overhead == 24
    assert p.left_to_right.packet_overhead == 0
    assert p.right_to_left.wire_bytes(1514) == 1538
    assert p.right_to_left.to_dict()["packet_overhead"] == 24
    assert "packet_overhead" not in p.left_to_right.to_dict()
