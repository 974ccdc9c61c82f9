"""What a user can get wrong, and what the broker can refuse: one clear line
on stderr, a non-zero exit, and (with --json) a document recording the
failure."""
import pytest

from conftest import check_doc, free_port


def one_line(r, *words):
    """Exactly one non-empty stderr line, naming the tool and the cause."""
    lines = r.err_lines
    assert len(lines) == 1, r.stderr
    line = lines[0].lower()
    assert line.startswith(("loadgen: error: ", "sink: error: ")), line
    for w in words:
        assert w.lower() in line, (w, line)
    return line


BAD_ARGS = [
    (["--bogus"], "unknown option"),
    (["--qos", "3"], "qos"),
    (["--qos", "-1"], "qos"),
    (["--port", "70000"], "--port"),
    (["--port", "12x"], "--port"),
    (["--mqtt", "4.0"], "--mqtt"),
    (["--transport", "quic9"], "--transport"),
    (["--tls-version", "1.1", "--transport", "tls"], "--tls-version"),
    (["--cafile", "/nonexistent/ca.pem", "--transport", "tls"], "--cafile"),
    (["--cafile", "/etc/hostname"], "--transport tls"),
    (["--keepalive", "99999"], "--keepalive"),
    (["--connect-timeout", "soon"], "duration"),
    (["--json"], "needs a value"),
    (["stray"], "unexpected argument"),
]

LOADGEN_BAD = [
    (["--size", "10"], "header"),
    (["--size", "64q"], "--size"),
    (["--rate", "fast"], "--rate"),
    (["--rate", "-5"], "--rate"),
    (["--clients", "0"], "--clients"),
    (["--count", "1", "--total", "5"], "--total"),
    (["--topic", "a/+/b"], "topic"),
    (["--topic", "a/#"], "topic"),
    (["--topic", "x/{nope}"], "placeholder"),
    (["--arrival", "bursty"], "--arrival"),
    (["--arrival", "poisson", "--rate", "0"], "poisson"),
    (["--idle", "--count", "5"], "--idle"),
    (["--duration", "-1"], "duration"),
    # below one message per 1000 s: the due times would overflow
    (["--rate", "1e-10", "--count", "3"], "--rate"),
    (["--rate", "0.0009"], "--rate"),
    # sequence numbers stay below 2^48 (what the header holds)
    (["--count", str(2 ** 48 + 1)], "--count"),
    # publisher ids are 32-bit
    (["--id-base", str(2 ** 32 - 1), "--clients", "2"], "--id-base"),
    # (no limit on --clients without --id-base: default ids are random)
]

SINK_BAD = [
    (["--topic", "a/#/b"], "filter"),
    (["--topic", "a+/b"], "filter"),
    (["--topic", ""], "filter"),
    (["--count", "0"], "--count"),
    (["--idle-timeout", "1parsec"], "duration"),
    (["--raw-format", "csv"], "--raw-format"),
    (["--raw", "/nonexistent/dir/raw.txt"], "--raw"),
    (["--coalesce", "lots"], "duration"),
    (["--coalesce", "2s"], "--coalesce"),
    (["--expect", "0"], "--expect"),
    (["--drain", "soon"], "duration"),
    (["--drain", "2h"], "--drain"),
    (["--drain-max", "0"], "--drain-max"),
]


@pytest.mark.parametrize("tool", ["loadgen", "sink"])
@pytest.mark.parametrize("args,word", BAD_ARGS)
def test_bad_common_arguments(bench, tool, args, word):
    r = bench.run(tool, *args, json_out=False, timeout=10)
    assert r.rc == 2, r
    one_line(r, word)
    assert r.stdout == ""


@pytest.mark.parametrize("args,word", LOADGEN_BAD)
def test_bad_loadgen_arguments(bench, args, word):
    r = bench.run("loadgen", *args, json_out=False, timeout=10)
    assert r.rc == 2, r
    one_line(r, word)


@pytest.mark.parametrize("args,word", SINK_BAD)
def test_bad_sink_arguments(bench, args, word):
    r = bench.run("sink", *args, json_out=False, timeout=10)
    assert r.rc == 2, r
    one_line(r, word)


@pytest.mark.parametrize("tool", ["loadgen", "sink"])
def test_help_and_version(bench, tool):
    r = bench.run(tool, "--help", json_out=False, timeout=10)
    assert r.rc == 0 and r.stderr == ""
    assert r.stdout.startswith(f"usage: {tool}")
    for opt in ("--host", "--port", "--transport", "--cafile", "--tls-name",
                "--tls-version", "--mqtt", "--qos", "--json", "--topic"):
        assert opt in r.stdout, opt
    r = bench.run(tool, "--version", json_out=False, timeout=10)
    assert r.rc == 0 and r.stdout.startswith(f"{tool} ")


@pytest.mark.parametrize("tool", ["loadgen", "sink"])
def test_refused_connect(bench, tool):
    """allow_anonymous false: the broker answers CONNACK 'not authorized'."""
    args = ["--port", bench.broker.noanon]
    if tool == "loadgen":
        args += ["--count", 1]
    else:
        args += ["--count", 1]
    r = bench.run(tool, *args, timeout=20)
    assert r.rc == 1, r
    one_line(r, "refused", "not authorized", str(bench.broker.noanon))
    check_doc(r.doc, tool)
    assert r.doc["status"] == "failed"
    assert r.doc["errors"]
    assert "not authorized" in r.doc["errors"][0]["message"]
    if tool == "loadgen":
        assert r.doc["totals"]["failed"] == 1
        assert r.doc["connections"][0]["state"] == "failed"


def test_refused_connect_many_clients_one_line(bench):
    r = bench.run("loadgen", "--port", bench.broker.noanon, "--clients", 5,
                  "--count", 1, timeout=20)
    assert r.rc == 1, r
    one_line(r, "not authorized", "of 5 connections failed")
    assert r.doc["totals"]["connected"] == 0


@pytest.mark.parametrize("tool", ["loadgen", "sink"])
def test_unreachable_broker(bench, tool):
    port = free_port()  # nobody listens there
    r = bench.run(tool, "--port", port, "--count", 1, timeout=20)
    assert r.rc == 1, r
    one_line(r, f"127.0.0.1:{port}", "refused")
    assert r.doc["status"] == "failed"
    assert r.doc["stop_reason"] == "error"


@pytest.mark.parametrize("tool", ["loadgen", "sink"])
def test_wrong_ca(bench, tool):
    """A CA that did not sign the broker's certificate: no connection."""
    r = bench.run(tool, "--transport", "tls", "--port", bench.broker.tls,
                  "--cafile", bench.certs["wrongca"], "--count", 1,
                  timeout=20)
    assert r.rc == 1, r
    one_line(r, "certificate")
    assert r.doc["status"] == "failed"


@pytest.mark.parametrize("tool", ["loadgen", "sink"])
def test_wrong_tls_name(bench, tool):
    """The right CA, but a name the certificate does not carry."""
    r = bench.run(tool, "--transport", "tls", "--port", bench.broker.tls,
                  "--cafile", bench.certs["ca"], "--tls-name",
                  "broker.example", "--count", 1, timeout=20)
    assert r.rc == 1, r
    one_line(r, "certificate")


def test_tls_to_plain_listener(bench):
    """TLS spoken to a TCP listener fails cleanly, not by hanging."""
    r = bench.run("loadgen", "--transport", "tls", "--port",
                  bench.broker.tcp, "--cafile", bench.certs["ca"],
                  "--count", 1, "--connect-timeout", "3s", timeout=20)
    assert r.rc == 1, r
    one_line(r)


@pytest.mark.parametrize("qos", [1, 2])
def test_refused_publishes(bench, qos):
    """MQTT 5 broker refuses every PUBLISH (ACL: read only): PUBACK/PUBREC
    reason 0x87. Counted, kept out of the ack latency, the run failed.
    One message per connection: Mosquitto 2.0.11 with max_queued_messages
    0 resets the connection at a client's second refused QoS 1/2 publish."""
    r = bench.run("loadgen", "--port", bench.broker.readonly, "--mqtt", "5",
                  "--qos", qos, "--clients", 3, "--count", 1, "--rate", 0,
                  "--topic", bench.topic() + "/{n}", timeout=20)
    assert r.rc == 1, r
    one_line(r, "refused 3 of 3 publishes", "not authorized", "0x87")
    check_doc(r.doc, "loadgen")
    assert r.doc["status"] == "failed"
    t = r.doc["totals"]
    assert t["messages_sent"] == 3 and t["connected"] == 3
    assert t["acks"] == 3 and t["acks_failed"] == 3 and t["unacked"] == 0
    assert r.doc["ack_latency"]["count"] == 0
    for c in r.doc["connections"]:
        assert c["state"] == "closed"
        assert c["acks_failed"] == 1 and c["ack_latency"]["count"] == 0
    assert any("refused" in e["message"] for e in r.doc["errors"])


def test_sink_lower_granted_qos(bench):
    """The broker grants QoS 1 for a QoS 2 subscription (max_qos 1): the
    run would measure QoS 1, so the sink fails unless told to accept it."""
    args = ["--port", bench.broker.maxqos1, "--qos", 2, "--topic",
            bench.topic(), "--duration", "100ms"]
    r = bench.run("sink", *args, timeout=20)
    assert r.rc == 1, r
    one_line(r, "granted qos 1", "qos 2", "--accept-lower-qos")
    check_doc(r.doc, "sink")
    assert r.doc["status"] == "failed"
    assert r.doc["stop_reason"] == "error"
    sub = r.doc["subscription"]
    assert sub["filters"][0]["granted_qos"] == 1
    assert sub["qos_downgraded"] is True
    r = bench.run("sink", *args, "--accept-lower-qos", timeout=20)
    assert r.rc == 0, r
    assert r.doc["status"] == "ok" and r.doc["stop_reason"] == "duration"
    assert r.doc["subscription"]["filters"][0]["granted_qos"] == 1
    assert r.doc["subscription"]["qos_downgraded"] is True
    assert r.doc["config"]["accept_lower_qos"] is True
