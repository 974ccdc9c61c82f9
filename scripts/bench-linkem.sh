#!/usr/bin/env bash
# bench-linkem.sh: measure the userspace link emulator (build/*/bin/linkem)
# on real TAP devices and print a table. Measures, never asserts.
#
#   scripts/bench-linkem.sh            all three parts, about 2.5 min
#   DUR=5 scripts/bench-linkem.sh      shorter flows
#   BENCH_BIN=build/asan/bin ...       another build
#   LINKEM_WRAP="chrt -f 10" ...       run linkem under a command prefix
#                                      (here: real-time priority)
#
# Setup: two network namespaces mqbt-<pid>-a/b joined only by linkem (it is
# started inside namespace a, its tap-b is moved to b), private addresses
# inside them, IPv6 off, static neighbours. Traffic comes from iperf3.
#   1. CPU of linkem carrying a saturated 100 Mb/s link (1 ms delay, 0.2 %
#      loss: the ethernet profile), iperf3 TCP and UDP at 150 Mb/s, with
#      and without the busy-poll before departures (--spin-us).
#   2. Packet rate: rate 0 (unlimited), 64-byte UDP payloads offered at
#      rising rates; offered vs delivered frames per second, at normal and
#      at real-time priority (--rt-prio).
#   3. Timing error (write time - scheduled departure) at a moderate load
#      (30 Mb/s of 1400-byte UDP over the 100 Mb/s link): no busy-poll,
#      the default, the default at real-time priority; the timer's own
#      wake-up latency; ping RTT against the configured one.
# Needs root, iperf3, jq. Cleans up on exit, also on failure or Ctrl-C.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BENCH_BIN:-build/release/bin}
LINKEM=$BIN/linkem
DUR=${DUR:-10}

die() { echo "bench-linkem: error: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, TAP devices)"
[ -x "$LINKEM" ] || die "$LINKEM not found; run 'make' first"
for t in iperf3 jq ip ping; do
	command -v $t >/dev/null || die "$t not found; run 'make deps'"
done

NSA=mqbt-$$-a
NSB=mqbt-$$-b
TA=mqbl$$a
TB=mqbl$$b
IPA=10.224.0.1
IPB=10.224.0.2
TMP=$(mktemp -d /tmp/bench-linkem.XXXXXX)
LPID=
PIDS=()
HZ=$(getconf CLK_TCK)

cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	if [ -n "$LPID" ]; then
		kill -TERM "$LPID" 2>/dev/null || true
		wait "$LPID" 2>/dev/null || true
	fi
	ip netns del "$NSA" 2>/dev/null || true
	ip netns del "$NSB" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in $NSA $NSB; do
	ip netns add $ns
	ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
		net.ipv6.conf.default.disable_ipv6=1
	ip -n $ns link set lo up
done

# start_link LINKEM-OPTIONS...: linkem in namespace a, TAPs addressed
start_link() {
	# shellcheck disable=SC2086 # LINKEM_WRAP is a command prefix
	ip netns exec $NSA ${LINKEM_WRAP:-} "$LINKEM" --tap-a $TA --tap-b $TB \
		--stats "$TMP/stats.json" "$@" >"$TMP/out" 2>"$TMP/err" &
	LPID=$!
	local i
	# creating a device takes the kernel's rtnl lock, which namespace
	# teardown elsewhere on the machine can hold for seconds
	for i in $(seq 600); do
		grep -q ready "$TMP/out" 2>/dev/null && break
		kill -0 $LPID 2>/dev/null || die "linkem failed: $(cat "$TMP/err")"
		sleep 0.05
	done
	if ! grep -q ready "$TMP/out"; then
		echo "bench-linkem: $(cat /proc/$LPID/comm) stuck; kernel stack:" >&2
		cat /proc/$LPID/stack >&2 || true
		die "linkem not ready after 30 s: $(cat "$TMP/err")"
	fi
	ip -n $NSA link set $TB netns $NSB
	ip -n $NSA addr add $IPA/24 dev $TA
	ip -n $NSB addr add $IPB/24 dev $TB
	ip -n $NSA link set $TA up
	ip -n $NSB link set $TB up
	local ma mb
	ma=$(ip -n $NSA -j link show dev $TA | jq -r '.[0].address')
	mb=$(ip -n $NSB -j link show dev $TB | jq -r '.[0].address')
	ip -n $NSA neigh replace $IPB lladdr "$mb" dev $TA nud permanent
	ip -n $NSB neigh replace $IPA lladdr "$ma" dev $TB nud permanent
}

stop_link() {
	local rc=0
	kill -TERM $LPID
	wait $LPID || rc=$?
	LPID=
	[ $rc -eq 0 ] ||
		echo "bench-linkem: linkem exited with $rc: $(cat "$TMP/err")" >&2
}

cpu_ticks() { awk '{print $14 + $15}' /proc/$LPID/stat; }
now() { date +%s.%N; }
# link counter: ns dev rx|tx packets|bytes|dropped
ctr() { ip -n "$1" -s -j link show dev "$2" | jq ".[0].stats64.$3.$4"; }

# iperf3 server in b for one test; sets SPID
start_server() {
	ip netns exec $NSB iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
	SPID=$!
	PIDS+=($SPID)
	sleep 0.3
}

echo "linkem benchmark: $($LINKEM --version), kernel $(uname -r)," \
	"$(nproc) CPUs, $DUR s per flow"
echo

# ---- 1. CPU at a saturated 100 Mb/s link --------------------------------
echo "1. saturated 100 Mb/s link (delay 1 ms, loss 0.2 %): CPU of linkem"
printf "   %-22s %-9s %12s %12s %8s %8s %10s\n" flow "--spin-us" \
	"goodput Mb/s" "frames Mb/s" "CPU %" "CPU s" "t.err p50"
for run in tcp:0 tcp:default udp:0 udp:default; do
	flow=${run%:*}
	spin=${run#*:}
	if [ $spin = default ]; then opt=(); else opt=(--spin-us $spin); fi
	start_link --rate 100000000 --delay-us 1000 --loss 0.002 "${opt[@]}"
	start_server
	if [ $flow = tcp ]; then
		args=(-t "$DUR")
		label="iperf3 TCP"
	else
		args=(-u -b 150M -l 1400 -t "$DUR")
		label="iperf3 UDP 150 Mb/s"
	fi
	c0=$(cpu_ticks); t0=$(now); b0=$(ctr $NSB $TB rx bytes)
	ip netns exec $NSA iperf3 -c $IPB -p 5201 -J "${args[@]}" \
		>"$TMP/iperf.json" || true
	c1=$(cpu_ticks); t1=$(now); b1=$(ctr $NSB $TB rx bytes)
	wait $SPID || true
	stop_link
	good=$(jq '.end.sum_received.bits_per_second // .end.sum.bits_per_second
		| . / 1e6' "$TMP/iperf.json")
	terr=$(jq '.a2b.timing_error.p50_us' "$TMP/stats.json")
	awk -v l="$label" -v s=$spin -v g="$good" -v c0=$c0 -v c1=$c1 \
	    -v t0=$t0 -v t1=$t1 -v b0=$b0 -v b1=$b1 -v hz=$HZ -v te=$terr '
	    BEGIN {
		d = t1 - t0; cpu = (c1 - c0) / hz
		printf "   %-22s %-9s %12.1f %12.1f %8.1f %8.2f %10.1f\n", l,
		       s, g, (b1 - b0) * 8 / d / 1e6, 100 * cpu / d, cpu, te }'
done
echo "   (frames Mb/s: bytes written to tap-b incl. Ethernet header; CPU %"
echo "    of one core over the flow, user+sys, incl. the kernel's receive"
echo "    path that runs inside linkem's writes; t.err p50: median timing"
echo "    error a2b in us)"
echo

# ---- 2. packet rate, rate unlimited -------------------------------------
echo "2. packet rate, --rate 0, 64-byte UDP payloads (106-byte frames)"
printf "   %-10s %12s %12s %12s %12s %10s %8s\n" "--rt-prio" \
	"offered pps" "read pps" "written pps" "tap drops" "rcv loss%" "CPU %"
for run in 10M:0 40M:0 0:0 10M:10 40M:10 0:10; do
	bw=${run%:*}
	prio=${run#*:}
	start_link --rate 0 --rt-prio $prio
	start_server
	c0=$(cpu_ticks); t0=$(now)
	i0=$(ctr $NSA $TA tx packets); d0=$(ctr $NSA $TA tx dropped)
	o0=$(ctr $NSB $TB rx packets)
	ip netns exec $NSA iperf3 -c $IPB -p 5201 -J -u -l 64 -b $bw \
		-t "$DUR" >"$TMP/iperf.json" || true
	c1=$(cpu_ticks); t1=$(now)
	i1=$(ctr $NSA $TA tx packets); d1=$(ctr $NSA $TA tx dropped)
	o1=$(ctr $NSB $TB rx packets)
	wait $SPID || true
	stop_link
	sent=$(jq '.end.sum.packets // 0' "$TMP/iperf.json")
	secs=$(jq '.end.sum.seconds // 1' "$TMP/iperf.json")
	loss=$(jq '.end.sum.lost_percent // -1' "$TMP/iperf.json")
	awk -v s=$sent -v ss=$secs -v l=$loss -v c0=$c0 -v c1=$c1 -v t0=$t0 \
	    -v t1=$t1 -v i0=$i0 -v i1=$i1 -v d0=$d0 -v d1=$d1 -v o0=$o0 \
	    -v o1=$o1 -v hz=$HZ -v p=$prio 'BEGIN {
		d = t1 - t0
		printf "   %-10s %12.0f %12.0f %12.0f %12d %10.2f %8.1f\n", p,
		       s / ss,
		       (i1 - i0) / d, (o1 - o0) / d, d1 - d0, l,
		       100 * (c1 - c0) / hz / d }'
done
echo "   (offered: iperf3 sender; read: frames linkem took from tap-a;"
echo "    written: frames it wrote to tap-b; tap drops: frames the kernel"
echo "    dropped because linkem did not read them in time; rcv loss: the"
echo "    iperf3 receiver's count; iperf3 competes for the same CPUs;"
echo "    offered 10M, 40M, unlimited bit/s)"
echo

# ---- 3. timing error at a moderate load --------------------------------
echo "3. timing error (write - scheduled departure), a2b, 30 Mb/s of" \
	"1400-byte UDP"
echo "   over 100 Mb/s, delay 1 ms; ping RTT (configured 2.016 ms) meanwhile"
printf "   %-10s %8s %8s %8s %8s %8s | %-22s %8s %8s %7s %6s\n" \
	"options" p50 p90 p99 p99.9 max "timer wake p50/p90/p99" "RTT med" \
	"idle avg" "lead" "CPU %"
for run in spin0 default rt10; do
	case $run in
	spin0) opt=(--spin-us 0); spin="spin 0" ;;
	default) opt=(); spin="default" ;;
	rt10) opt=(--rt-prio 10); spin="rt-prio 10" ;;
	esac
	start_link --rate 100000000 --delay-us 1000 "${opt[@]}"
	base=$(ip netns exec $NSA ping -n -q -i 0.05 -c 20 $IPB |
		awk -F' = ' '/^rtt/ {split($2, a, "/"); print a[2]}')
	start_server
	ip netns exec $NSA ping -n -i 0.1 -c $((DUR * 10 - 5)) $IPB \
		>"$TMP/ping.txt" 2>&1 &
	PPID2=$!
	PIDS+=($PPID2)
	c0=$(cpu_ticks); t0=$(now)
	ip netns exec $NSA iperf3 -c $IPB -p 5201 -u -b 30M -l 1400 \
		-t "$DUR" >/dev/null || true
	c1=$(cpu_ticks); t1=$(now)
	wait $SPID || true
	wait $PPID2 || true
	stop_link
	rtt=$(grep -o 'time=[0-9.]*' "$TMP/ping.txt" | cut -d= -f2 | sort -n |
		awk '{a[NR] = $1} END {print NR ? a[int((NR + 1) / 2)] : "-"}')
	cpu=$(awk -v c0=$c0 -v c1=$c1 -v t0=$t0 -v t1=$t1 -v hz=$HZ \
		'BEGIN {printf "%.1f", 100 * (c1 - c0) / hz / (t1 - t0)}')
	read -r p50 p90 p99 p999 max w50 w90 w99 lead < <(jq -r '
		.a2b.timing_error as $t | .timer as $w |
		[$t.p50_us, $t.p90_us, $t.p99_us, $t.p99_9_us, $t.max_us,
		 $w.wake_latency.p50_us, $w.wake_latency.p90_us,
		 $w.wake_latency.p99_us, $w.lead_us]
		| map(. * 10 | round / 10) | @tsv' "$TMP/stats.json")
	printf "   %-10s %8s %8s %8s %8s %8s | %-22s %8s %8s %7s %6s\n" \
		"$spin" "$p50" "$p90" "$p99" "$p999" "$max" "$w50/$w90/$w99" \
		"$rtt" "$base" "$lead" "$cpu"
done
echo "   (microseconds; lead: how early the timer was armed at the end;"
echo "    RTT med: ping under the load, ms; idle avg: ping before the load)"
