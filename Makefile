# MQTT transport benchmark: build, test, run.
#
#   make deps        install the Debian packages the project needs
#   make             build the C programs (build/release/bin/)
#   make test        every test suite; last line: "N passed, N failed,
#                    N skipped"
#   make bench       the benchmark matrix -> results/<run-id>/ (README)
#   make figures RUN=results/<run-id>   redraw figures and report from JSON
#   make footprint   binary and library sizes, client and server side
#   make calibrate   measure every link profile against its configuration
#   make clean-net   remove network leftovers of a run killed with SIGKILL
#   make bench-loopback   loadgen/sink against Mosquitto's own clients
#
# Switches: BUILD=release|asan, FUZZ_SECONDS=N (per fuzz target in make test).
# make bench: QUICK=1, PROFILES=, TRANSPORTS=, SCENARIOS=, REPS=, LIST=1,
#   RESUME=results/<run-id>, CAPTURE=1, QLOG=1, RAW=1, SEED=, BACKEND=,
#   CCA= (congestion control: not CC, the compiler), RESULTS=
#   (read by the runner from the environment; python3 -m runner --help).

BUILD ?= release
FUZZ_SECONDS ?= 30
SYSPY := /usr/bin/python3

PKGS := gnutls jansson libngtcp2 libngtcp2_crypto_gnutls
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CC ?= cc
WARN := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wvla
ifeq ($(BUILD),asan)
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
OPT := -O2 -g
endif
CFLAGS_ALL = $(WARN) $(OPT) -Ibench/lib -Ibench $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(OPT) $(LDFLAGS)

# The library is a set of modules, one folder and one archive each:
#   util     command line, atomic files, PRNG          (libc only)
#   measure  histograms, payload header, JSON reports  (jansson)
#   mqtt     codec, session (pure MQTT logic)          (libc only)
#   net      event loop, connections, transports       (GnuTLS, ngtcp2)
#   app      the MQTT client (a session on a connection),
#            the client binaries' options and results   (all of the above)
#   linkem   the link emulator's core (bench/linkem/)  (libc only)
# Each binary links only the archives and system libraries it uses.
OUT := build/$(BUILD)
MODULES := util measure mqtt net app
LIB_SRC := $(foreach m,$(MODULES),$(wildcard bench/lib/$(m)/*.c))
LINKEM_SRC := $(filter-out bench/linkem/linkem.c,$(wildcard bench/linkem/*.c))
ARCHIVES := $(MODULES:%=$(OUT)/lib/libmqb_%.a) $(OUT)/lib/libmqb_linkem.a
lib_of = $(foreach m,$(1),$(OUT)/lib/libmqb_$(m).a)
pkg_libs = $(shell pkg-config --libs $(1) 2>/dev/null)

CLIENT_LIBS := $(call lib_of,app net mqtt measure util)
CLIENT_PKGS := gnutls jansson libngtcp2 libngtcp2_crypto_gnutls
GATEWAY_LIBS := $(call lib_of,app net measure util)
LINKEM_LIBS := $(call lib_of,linkem measure net util)
LINKEM_PKGS := jansson
ALL_LIBS := $(call lib_of,app net mqtt measure linkem util)

CMD_SRC := $(wildcard bench/cmd/*.c)
BINS := $(CMD_SRC:bench/cmd/%.c=$(OUT)/bin/%) $(OUT)/bin/linkem
TEST_SRC := $(wildcard bench/tests/test_*.c)
TESTS := $(TEST_SRC:bench/tests/%.c=$(OUT)/tests/%)
FUZZ_SRC := $(wildcard bench/fuzz/fuzz_*.c)
FUZZERS := $(FUZZ_SRC:bench/fuzz/%.c=build/fuzz/%)

.PHONY: all bins tests deps check-deps test test-run test-unit test-asan test-fuzz \
        test-integration test-topologies test-runner bench bench-loopback figures \
        footprint calibrate clean-net clean fuzzers
.DEFAULT_GOAL := all

all: check-deps bins tests

bins: $(BINS)
tests: $(TESTS)

check-deps:
	@pkg-config --exists $(PKGS) || { echo "error: missing build libraries ($(PKGS)); run 'make deps' first" >&2; exit 1; }

deps:
	@scripts/deps.sh

# Objects carry their header dependencies (-MMD).
$(OUT)/obj/%.o: bench/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

define module_archive
$(OUT)/lib/libmqb_$(1).a: $(patsubst bench/%.c,$(OUT)/obj/%.o,$(2))
	@mkdir -p $$(@D)
	rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach m,$(MODULES),$(eval $(call module_archive,$(m),$(wildcard bench/lib/$(m)/*.c))))
$(eval $(call module_archive,linkem,$(LINKEM_SRC)))

$(OUT)/bin/loadgen $(OUT)/bin/sink: $(OUT)/bin/%: $(OUT)/obj/cmd/%.o $(CLIENT_LIBS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(CLIENT_LIBS) $(call pkg_libs,$(CLIENT_PKGS)) -lm

$(OUT)/bin/gateway: $(OUT)/obj/cmd/gateway.o $(GATEWAY_LIBS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(GATEWAY_LIBS) $(call pkg_libs,$(CLIENT_PKGS)) -lm

$(OUT)/bin/linkem: $(OUT)/obj/linkem/linkem.o $(LINKEM_LIBS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(LINKEM_LIBS) $(call pkg_libs,$(LINKEM_PKGS)) -lm

$(OUT)/tests/%: bench/tests/%.c $(ALL_LIBS) bench/tests/tt.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -MMD -MP -Ibench/tests -o $@ $< $(ALL_LIBS) $(LDFLAGS_ALL) $(PKG_LIBS) -lm

-include $(shell find build -name '*.d' 2>/dev/null)

# libFuzzer targets: clang, the whole library rebuilt with coverage.
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -O1 \
	-fsanitize=fuzzer,address,undefined -Ibench/lib -Ibench $(PKG_CFLAGS)
build/fuzz/%: bench/fuzz/%.c $(LIB_SRC) $(wildcard bench/lib/*/*.h bench/fuzz/*.h)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ $< $(LIB_SRC) $(PKG_LIBS) -lm
fuzzers: $(FUZZERS)

# ---- tests ---------------------------------------------------------------
# Each suite writes build/test-results/<suite>.json through scripts/testsuite.py;
# `make test` runs them all (keep going on failure) and sums them.
TS := $(SYSPY) scripts/testsuite.py

test: deps
	@rm -rf build/test-results
	@$(MAKE) --no-print-directory -k test-run; \
	 $(TS) sum

test-run: test-unit test-asan test-fuzz test-integration test-topologies test-runner

test-unit: check-deps
	@$(MAKE) --no-print-directory BUILD=release bins tests
	@for t in $(TEST_SRC:bench/tests/%.c=%); do \
	  $(TS) run unit-$$t -- build/release/tests/$$t || true; done

test-asan: check-deps
	@$(MAKE) --no-print-directory BUILD=asan bins tests
	@for t in $(TEST_SRC:bench/tests/%.c=%); do \
	  ASAN_OPTIONS=detect_leaks=1 $(TS) run asan-$$t -- build/asan/tests/$$t || true; done

test-fuzz: check-deps fuzzers
	@for f in $(FUZZ_SRC:bench/fuzz/%.c=%); do \
	  $(TS) run $$f -- scripts/run-fuzzer.sh build/fuzz/$$f bench/fuzz/corpus/$${f#fuzz_} $(FUZZ_SECONDS) || true; done

test-integration: check-deps
	@$(MAKE) --no-print-directory BUILD=release bins
	@$(MAKE) --no-print-directory BUILD=asan bins
	@BENCH_BIN=$(CURDIR)/build/release/bin $(TS) run integration -- \
	  $(SYSPY) -m pytest -q -p no:cacheprovider bench/tests/integration || true
	@BENCH_BIN=$(CURDIR)/build/asan/bin ASAN_OPTIONS=detect_leaks=1 $(TS) run integration-asan -- \
	  $(SYSPY) -m pytest -q -p no:cacheprovider bench/tests/integration || true

test-topologies: check-deps
	@$(MAKE) --no-print-directory BUILD=release bins
	@BENCH_BIN=$(CURDIR)/build/release/bin $(TS) run topologies -- \
	  $(SYSPY) -m pytest -q -p no:cacheprovider topologies/tests || true

# The runner: scenario validation, statistics, report (no network), then
# `make bench QUICK=1` end to end on the dumbbell, Ctrl-C and RESUME, a
# failing cell, CAPTURE=1 and make footprint (about 3 minutes).
test-runner: check-deps
	@$(MAKE) --no-print-directory BUILD=release bins
	@BENCH_BIN=$(CURDIR)/build/release/bin $(TS) run runner -- \
	  $(SYSPY) -m pytest -q -p no:cacheprovider runner/tests || true

# ---- running -------------------------------------------------------------
bench: deps all
	@$(SYSPY) -m runner bench

bench-loopback: all
	@scripts/bench-loopback.sh

figures:
	@test -n "$(RUN)" || { echo "error: say which run: make figures RUN=results/<run-id>" >&2; exit 2; }
	@$(SYSPY) -m runner figures "$(RUN)"

footprint: all
	@$(SYSPY) -m runner footprint

calibrate: all
	$(SYSPY) scripts/calibrate.py --readme README.md

clean-net:
	$(SYSPY) -m topologies.cleanup

clean:
	rm -rf build
