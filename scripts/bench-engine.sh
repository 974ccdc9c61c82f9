#!/usr/bin/env bash
# bench-engine.sh: the loopback figures of scripts/bench-loopback.sh for
# two versions of the engine side by side, in one run: an earlier commit
# (default ec62bd3, the last one before the engine became sessions on
# connections) and the working tree. A benchmark: it measures and prints.
#
# Usage: scripts/bench-engine.sh [-o REV] [-n MESSAGES] [-r REPETITIONS]
#                                [-c IDLE_CONNECTIONS]
#
# REV is built (make BUILD=release bins) in a temporary git worktree
# outside the repository; the working tree's binaries come from
# build/release/bin (run `make` first). Then, R times (default 3), the two
# versions take turns: one bench-loopback.sh run each (-r 1: loadgen + sink
# default, with --coalesce 200us, and mosquitto_pub + mosquitto_sub as the
# reference of that very moment; then C idle connections, default 10,000,
# at QoS 0 and 1). Printed: every run's figures and, per version, the
# medians over the repetitions. Then, as the message rates on loopback are
# the broker's more than ours and swing by 10 % between runs: instructions
# per message of loadgen and of sink (valgrind's callgrind, which counts
# instructions, the same for the same binary and input whatever else the
# machine does), QoS 0, 64-byte payloads, from the difference between runs
# of 2,000 and 20,000 messages (so start-up and connection cancel out).
set -u

OLD=ec62bd3
N=200000
REPS=3
IDLE=10000
while getopts "o:n:r:c:h" opt; do
	case $opt in
	o) OLD=$OPTARG ;;
	n) N=$OPTARG ;;
	r) REPS=$OPTARG ;;
	c) IDLE=$OPTARG ;;
	*) sed -n '2,18p' "$0"; exit 2 ;;
	esac
done

cd "$(dirname "$0")/.."
ROOT=$PWD
NEW_BIN=$ROOT/build/release/bin
PY=/usr/bin/python3
[ -x "$NEW_BIN/loadgen" ] || { echo "error: $NEW_BIN/loadgen is missing; run 'make' first" >&2; exit 1; }
git rev-parse --verify -q "$OLD^{commit}" >/dev/null || {
	echo "error: '$OLD' is not a commit of this repository" >&2; exit 2; }

WORK=$(mktemp -d /tmp/bench-engine.XXXXXX)
cleanup() {
	git -C "$ROOT" worktree remove --force "$WORK/old" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== bench-engine: $OLD against the working tree ($(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'))"
git worktree add -q --detach "$WORK/old" "$OLD" || exit 1
if ! make -s -C "$WORK/old" BUILD=release bins >"$WORK/build.log" 2>&1; then
	echo "error: building $OLD failed:" >&2; tail -5 "$WORK/build.log" >&2; exit 1
fi
OLD_BIN=$WORK/old/build/release/bin

for r in $(seq "$REPS"); do
	for v in old new; do
		bin=$OLD_BIN
		[ $v = new ] && bin=$NEW_BIN
		echo "-- repetition $r, $v"
		BENCH_BIN=$bin scripts/bench-loopback.sh -n "$N" -r 1 -c "$IDLE" \
			> "$WORK/$v.$r" 2>&1 || { cat "$WORK/$v.$r"; exit 1; }
		grep -E "median msg/s|per idle connection" "$WORK/$v.$r" | sed 's/^/  /'
	done
done

# ---- instructions per message -------------------------------------------
if command -v valgrind >/dev/null; then
	PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	printf 'user root\npersistence false\nset_tcp_nodelay true\nmax_queued_messages 0\nlistener %s 127.0.0.1\nallow_anonymous true\n' \
		"$PORT" > "$WORK/mq.conf"
	mosquitto -c "$WORK/mq.conf" >/dev/null 2>&1 &
	MQ=$!
	for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
	# instr BIN N TAG -> "loadgen_instructions sink_instructions"
	instr() {
		rm -f "$WORK/ready"
		valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.sink.$3" \
			"$1/sink" --port "$PORT" --topic "cg/$3" --count "$2" \
			--idle-timeout 60s --json /dev/null --ready-file "$WORK/ready" 2>/dev/null &
		local sp=$!
		for _ in $(seq 300); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
		valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.lg.$3" \
			"$1/loadgen" --port "$PORT" --topic "cg/$3" --count "$2" \
			--rate 0 --size 64 --json /dev/null 2>/dev/null
		wait $sp
		for f in lg sink; do
			callgrind_annotate "$WORK/cg.$f.$3" 2>/dev/null |
				awk '/PROGRAM TOTALS/ {gsub(",", "", $1); printf "%s ", $1}'
		done
		echo
	}
	echo
	echo "== instructions per message (callgrind), QoS 0, 64 bytes"
	for v in old new; do
		bin=$OLD_BIN
		[ $v = new ] && bin=$NEW_BIN
		read -r l1 s1 < <(instr "$bin" 2000 "${v}a")
		read -r l2 s2 < <(instr "$bin" 20000 "${v}b")
		printf '   %-4s loadgen %6d   sink %6d\n' "$v" $(( (l2 - l1) / 18000 )) \
			$(( (s2 - s1) / 18000 ))
	done
	kill $MQ 2>/dev/null
	wait $MQ 2>/dev/null
fi

$PY - "$WORK" "$REPS" "$OLD" <<'EOF'
import re, statistics, sys
work, reps, old = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def figures(path):
    t = open(path).read()
    m = re.search(r"median msg/s: loadgen\+sink (\d+), with --coalesce \S+ "
                  r"(\d+), mosquitto_pub\+sub (\d+)", t)
    mem = [float(x) for x in re.findall(
        r"per idle connection: ([\d.]+) KiB", t)]
    return [float(m.group(1)), float(m.group(2)), float(m.group(3))] + mem
rows = {}
for v in ("old", "new"):
    runs = [figures(f"{work}/{v}.{r}") for r in range(1, reps + 1)]
    rows[v] = [statistics.median(col) for col in zip(*runs)]
names = ["msg/s, default sink", "msg/s, sink --coalesce 200us",
         "msg/s, mosquitto_pub+sub (reference)",
         "KiB per idle connection, QoS 0", "KiB per idle connection, QoS 1"]
print(f"\n== medians of {reps} repetitions, the versions taking turns")
print(f"   {'figure':40s} {old:>10s} {'now':>10s} {'now/old':>8s}")
for i, n in enumerate(names):
    if i >= len(rows["old"]) or i >= len(rows["new"]):
        break
    o, w = rows["old"][i], rows["new"][i]
    print(f"   {n:40s} {o:10.2f} {w:10.2f} {w / o if o else 0:8.3f}")
EOF
