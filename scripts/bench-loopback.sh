#!/usr/bin/env bash
# bench-loopback.sh: loopback figures of the load generator and the sink
# against their reference, with a private Mosquitto. A benchmark, not a
# test: it measures and prints; targets are printed next to the figures.
#
# Usage: scripts/bench-loopback.sh [-n MESSAGES] [-r REPETITIONS]
#                                  [-c IDLE_CONNECTIONS (0: skip (b))]
#   BENCH_BIN   directory of loadgen and sink (default build/release/bin)
#
# Broker: started by the project's one launcher (python3 -m runner.mosquitto
# serve; runner/mosquitto.py holds the settings and why) in a temporary
# directory on a free loopback port, as the integration tests and the
# matrix runner start theirs: allow_anonymous true, user root, persistence
# false, set_tcp_nodelay true, max_queued_messages 0 (no broker-side
# drops), max_connections -1; here also max_inflight_messages 0 (no
# window) and log_type subscribe (see "readiness" below). Its open-file
# limit is raised to the hard limit (ulimit -n) before it starts.
#
# (a) Throughput, QoS 0, MQTT 3.1.1, N messages (default 200,000), one
#     publisher and one subscriber on one topic, through the same broker,
#     the pairs run one after the other, R (default 5) times each,
#     alternating:
#       ours:      sink --count N; loadgen --count N --rate 0 --size 64
#                  (as fast as the socket allows)
#       Mosquitto: mosquitto_sub -C N -F %U (one receive timestamp per
#                  message, written to a file); mosquitto_pub -l reading a
#                  prepared file of N lines of 63 characters + newline
#                  (payload 63 bytes; ours carry 64)
#     Our pair runs twice per repetition: with the sink as it is by default
#     (it sleeps in epoll whenever its socket is empty, so the broker has to
#     wake it every few messages, and on loopback the broker's send() pays
#     for that wake-up) and with --coalesce 200us (after a read that brought
#     more than one message the sink waits 200 us before reading again:
#     fewer wake-ups; adds up to 200 us to latencies under load). The
#     broker's CPU time per run (utime + stime from /proc) is printed too.
#     Timing, the same for both pairs: from the first message received to
#     the last one received, at the subscriber: (N - 1) / (t_last - t_first).
#     The sink takes both times from CLOCK_MONOTONIC (its JSON:
#     throughput.messages_per_s); for mosquitto_sub they are the first and
#     last %U timestamps (CLOCK_REALTIME). Connection set-up and process
#     start are outside the window for both. Readiness: the publisher starts
#     only once the subscription is in place: the sink signals it with
#     --ready-file; for mosquitto_sub the script waits for its SUBSCRIBE in
#     the broker's log (log_type subscribe), so that no message is sent
#     before anyone listens. Also printed: wall time from publisher start to
#     subscriber exit, which includes connection set-up.
#     Target: our pair at least as fast as Mosquitto's own clients.
#
# (b) Memory, one loadgen process holding C (default 10,000) concurrent idle
#     TCP connections (--idle, keepalive 60 s), at QoS 0 and at QoS 1: RSS
#     of the process before its connections (its own reading once the run's
#     fixed setup is done: TLS context, event loop, payload buffer; in its
#     JSON: memory.rss_start_kib) and after all are connected (VmRSS read by
#     this script from /proc/PID/status once loadgen has written its ready
#     file; loadgen's own reading in memory.rss_connected_kib and its
#     per_connection_kib are printed too). Per connection = (after -
#     before) / connected. The QoS must not change it: an idle connection
#     receives no acks, so it has no ack histogram (those are the load
#     generator's bookkeeping, allocated at the first ack, and reported
#     apart as memory.ack_histograms_kib).
#     Target: under 20 KiB per idle connection, at either QoS.
set -u

N=200000
REPS=5
IDLE=10000
COAL=200us
while getopts "n:r:c:h" opt; do
	case $opt in
	n) N=$OPTARG ;;
	r) REPS=$OPTARG ;;
	c) IDLE=$OPTARG ;;
	*) sed -n '2,10p' "$0"; exit 2 ;;
	esac
done

cd "$(dirname "$0")/.."
BIN=${BENCH_BIN:-build/release/bin}
PY=/usr/bin/python3
for t in "$BIN/loadgen" "$BIN/sink"; do
	[ -x "$t" ] || { echo "error: $t is missing; run 'make' first" >&2; exit 1; }
done
for t in mosquitto mosquitto_pub mosquitto_sub; do
	command -v $t >/dev/null || { echo "error: $t is not installed; run 'make deps'" >&2; exit 1; }
done

# Every process started from here inherits the raised limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)

WORK=$(mktemp -d /tmp/bench-loopback.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	$PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# json FILE EXPR: evaluate a Python expression on the document d
json() {
	$PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

PORT=$(free_port)
LOG=$WORK/mosquitto/mosquitto.log
# The project's one Mosquitto launcher (runner/mosquitto.py) with its
# settings; this benchmark wants no inflight window at all, and the
# subscribe log for mosquitto_sub's readiness.
$PY -m runner.mosquitto serve --dir "$WORK/mosquitto" \
	--tcp "$PORT" --bind 127.0.0.1 --set max_inflight_messages=0 \
	--log-type error --log-type warning --log-type subscribe \
	--ready-file "$WORK/broker.pid" &
SERVE=$!
PIDS+=("$SERVE")
for _ in $(seq 500); do
	[ -e "$WORK/broker.pid" ] && break
	kill -0 "$SERVE" 2>/dev/null || break
	sleep 0.02
done
if [ ! -e "$WORK/broker.pid" ]; then
	echo "error: mosquitto did not start:" >&2; cat "$LOG" >&2; exit 1
fi
BROKER=$(cat "$WORK/broker.pid")

echo "== bench-loopback: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -r), $(nproc) cores"
echo "   $("$BIN/loadgen" --version); $(mosquitto -h 2>&1 | head -1)"
echo "   broker 127.0.0.1:$PORT, open-file limit $NOFILE"

# broker CPU time so far, in clock ticks
broker_ticks() { awk '{print $14 + $15}' "/proc/$BROKER/stat"; }
TICK=$(getconf CLK_TCK)

# wait_file FILE PID: until FILE exists (0) or PID is gone (1)
wait_file() {
	for _ in $(seq 600); do
		[ -e "$1" ] && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.02
	done
	return 1
}

# ---- (a) throughput -------------------------------------------------------
LINES=$WORK/lines.txt
$PY -c '
import sys
n = int(sys.argv[1])
line = ("x" * 63 + "\n").encode()
sys.stdout.buffer.write(line * n)' "$N" > "$LINES"

run_ours() { # rep [sink options] -> msgs/s, received, wall s, broker cpu s
	local d=$WORK/ours$1${2:+co} t0 t1 r=$1 b0 b1
	shift
	mkdir -p "$d"
	"$BIN/sink" --port "$PORT" --topic bench/ours$r --count "$N" \
		--idle-timeout 20s --json "$d/sink.json" --ready-file "$d/ready" \
		"$@" &
	local sp=$!
	PIDS+=("$sp")
	wait_file "$d/ready" "$sp" || { echo "error: sink did not start" >&2; return 1; }
	b0=$(broker_ticks)
	t0=$(date +%s.%N)
	"$BIN/loadgen" --port "$PORT" --topic bench/ours$r --count "$N" \
		--rate 0 --size 64 --json "$d/lg.json" || return 1
	wait "$sp" || { echo "error: sink failed" >&2; return 1; }
	t1=$(date +%s.%N)
	b1=$(broker_ticks)
	echo "$(json "$d/sink.json" 'd["throughput"]["messages_per_s"]')" \
		"$(json "$d/sink.json" 'd["messages"]["received"]')" \
		"$($PY -c "print($t1 - $t0, ($b1 - $b0) / $TICK)")"
}

run_mosq() { # rep -> msgs/s, received, wall s, broker cpu s
	local d=$WORK/mosq$1 t0 t1 cid=benchsub$1 b0 b1
	mkdir -p "$d"
	mosquitto_sub -h 127.0.0.1 -p "$PORT" -i "$cid" -t bench/mosq$1 \
		-C "$N" -W 120 -F '%U' > "$d/times" 2> "$d/sub.err" &
	local sp=$!
	PIDS+=("$sp")
	for _ in $(seq 500); do
		grep -q "^[0-9]*: $cid 0 bench/mosq$1" "$LOG" && break
		sleep 0.01
	done
	b0=$(broker_ticks)
	t0=$(date +%s.%N)
	mosquitto_pub -h 127.0.0.1 -p "$PORT" -t bench/mosq$1 -l < "$LINES" || return 1
	wait "$sp" || { echo "error: mosquitto_sub failed: $(cat "$d/sub.err")" >&2; }
	t1=$(date +%s.%N)
	b1=$(broker_ticks)
	$PY - "$d/times" "$t0" "$t1" "$(( b1 - b0 ))" "$TICK" <<'EOF'
import sys
ts = [float(l) for l in open(sys.argv[1]) if l.strip()]
n = len(ts)
rate = (n - 1) / (ts[-1] - ts[0]) if n > 1 and ts[-1] > ts[0] else 0.0
print(rate, n, float(sys.argv[3]) - float(sys.argv[2]),
      int(sys.argv[4]) / int(sys.argv[5]))
EOF
}

echo
echo "== (a) QoS 0, MQTT 3.1.1, $N messages, 1 publisher -> 1 subscriber"
echo "   msg/s from first to last message at the subscriber (broker CPU s);"
echo "   the pairs alternate"
printf '   %-4s %-20s %-26s %-20s\n' rep "loadgen+sink" \
	"loadgen+sink --coalesce $COAL" "mosquitto_pub+sub"
OURS=() CO=() MOSQ=()
fmt() { printf '%.0f (%.2f)' "${1:-0}" "${2:-0}"; }
for r in $(seq "$REPS"); do
	read -r o_rate o_n o_wall o_cpu < <(run_ours "$r")
	read -r m_rate m_n m_wall m_cpu < <(run_mosq "$r")
	read -r c_rate c_n c_wall c_cpu < <(run_ours "$r" --coalesce "$COAL")
	for c in "sink:$o_n" "mosquitto_sub:$m_n" "sink --coalesce:$c_n"; do
		[ "${c##*:}" = "$N" ] || echo "   warning: ${c%:*} received ${c##*:} of $N"
	done
	printf '   %-4s %-20s %-26s %-20s\n' "$r" "$(fmt "$o_rate" "$o_cpu")" \
		"$(fmt "$c_rate" "$c_cpu")" "$(fmt "$m_rate" "$m_cpu")"
	OURS+=("${o_rate:-0}") CO+=("${c_rate:-0}") MOSQ+=("${m_rate:-0}")
done
$PY - "${OURS[*]}" "${CO[*]}" "${MOSQ[*]}" "$COAL" <<'EOF'
import statistics, sys
o, c, m = ([float(x) for x in a.split()] for a in sys.argv[1:4])
mo, mc, mm = (statistics.median(x) for x in (o, c, m))
r, rc = (x / mm if mm else float("inf") for x in (mo, mc))
print(f"   median msg/s: loadgen+sink {mo:.0f}, with --coalesce "
      f"{sys.argv[4]} {mc:.0f}, mosquitto_pub+sub {mm:.0f}")
print(f"   ratio to mosquitto_pub+sub: {r:.2f} (default sink), {rc:.2f} "
      f"(--coalesce)")
print(f"   target ratio >= 1.00: default sink "
      f"{'met' if r >= 1.0 else 'NOT met'}, --coalesce "
      f"{'met' if rc >= 1.0 else 'NOT met'}")
EOF

# ---- (b) idle connections -------------------------------------------------
[ "$IDLE" -gt 0 ] || exit 0
echo
echo "== (b) $IDLE idle TCP connections in one loadgen process"
if [ "$NOFILE" -lt $((IDLE + 64)) ]; then
	echo "   skipped: the open-file limit is $NOFILE, $((IDLE + 64)) needed" \
		"(raise the hard limit: ulimit -Hn as root)"
	exit 0
fi
idle_run() { # qos
	local d=$WORK/idle$1 t0 t1 rss_after hwm broker_rss
	mkdir -p "$d"
	t0=$(date +%s.%N)
	"$BIN/loadgen" --port "$PORT" --idle --clients "$IDLE" --qos "$1" \
		--keepalive 60 --connect-timeout 30s --no-per-connection \
		--json "$d/lg.json" --ready-file "$d/ready" &
	LP=$!
	PIDS+=("$LP")
	if ! wait_file "$d/ready" "$LP"; then
		for _ in $(seq 1500); do [ -e "$d/ready" ] && break; kill -0 $LP 2>/dev/null || break; sleep 0.1; done
	fi
	t1=$(date +%s.%N)
	if [ ! -e "$d/ready" ]; then
		wait "$LP"
		echo "   error: loadgen did not connect" >&2
		return 1
	fi
	rss_after=$(awk '/^VmRSS:/ {print $2}' /proc/$LP/status)
	hwm=$(awk '/^VmHWM:/ {print $2}' /proc/$LP/status)
	broker_rss=$(awk '/^VmRSS:/ {print $2}' /proc/$BROKER/status)
	kill -TERM "$LP"
	wait "$LP"
	$PY - "$d/lg.json" "$rss_after" "$hwm" "$broker_rss" "$t0" "$t1" "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
after, hwm, broker = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
wall = float(sys.argv[6]) - float(sys.argv[5])
m, t = d["memory"], d["totals"]
before, n = m["rss_start_kib"], t["connected"]
per = (after - before) / n if n else float("nan")
c = d["connect"]["total"]
print(f"   QoS {sys.argv[7]}: connected {n} of {t['connections']} in "
      f"{wall:.1f} s (connect p50 {c['p50_us'] / 1e3:.2f} ms, p99 "
      f"{c['p99_us'] / 1e3:.2f} ms)")
print(f"   loadgen RSS before {before} KiB, after {after} KiB "
      f"(its own reading {m['rss_connected_kib']} KiB, peak {hwm} KiB)")
print(f"   per idle connection: {per:.2f} KiB (its own figure "
      f"{m['per_connection_kib']:.2f} KiB; target < 20 KiB -> "
      f"{'met' if per < 20 else 'NOT met'})")
print(f"   mosquitto RSS with them: {broker} KiB "
      f"({broker / n:.2f} KiB per connection, for reference)")
print(f"   loadgen CPU {d['resources']['cpu_total_s']:.2f} s")
EOF
}
idle_run 0 || exit 1
idle_run 1 || exit 1
