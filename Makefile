# MQTT transport benchmark: build, test, run.
#
#   make deps        install the Debian packages the project needs
#   make             build the C programs (build/release/bin/)
#   make test        every test suite; last line: "N passed, N failed"
#   make bench       the benchmark (see README for what runs today)
#   make calibrate   measure every link profile against its configuration
#   make clean-net   remove network leftovers of a run killed with SIGKILL
#
# Switches: BUILD=release|asan, FUZZ_SECONDS=N (per fuzz target in make test).

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
CFLAGS_ALL = $(WARN) $(OPT) -Ibench/lib $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(OPT) $(LDFLAGS)
LIBS_ALL = $(PKG_LIBS) -lm

OUT := build/$(BUILD)
LIB_SRC := $(wildcard bench/lib/*.c)
LIB_OBJ := $(LIB_SRC:bench/lib/%.c=$(OUT)/obj/lib/%.o)
CMD_SRC := $(wildcard bench/cmd/*.c)
BINS := $(CMD_SRC:bench/cmd/%.c=$(OUT)/bin/%)
TEST_SRC := $(wildcard bench/tests/test_*.c)
TESTS := $(TEST_SRC:bench/tests/%.c=$(OUT)/tests/%)
FUZZ_SRC := $(wildcard bench/fuzz/fuzz_*.c)
FUZZERS := $(FUZZ_SRC:bench/fuzz/%.c=build/fuzz/%)

.PHONY: all bins tests deps check-deps test test-run test-unit test-asan test-fuzz \
        test-integration test-topologies bench calibrate clean-net clean fuzzers
.DEFAULT_GOAL := all

all: check-deps bins tests

bins: $(BINS)
tests: $(TESTS)

check-deps:
	@pkg-config --exists $(PKGS) || { echo "error: missing build libraries ($(PKGS)); run 'make deps' first" >&2; exit 1; }

deps:
	@scripts/deps.sh

$(OUT)/obj/lib/%.o: bench/lib/%.c $(wildcard bench/lib/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(OUT)/lib.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(OUT)/bin/%: bench/cmd/%.c $(OUT)/lib.a $(wildcard bench/lib/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(OUT)/lib.a $(LDFLAGS_ALL) $(LIBS_ALL)

$(OUT)/tests/%: bench/tests/%.c $(OUT)/lib.a $(wildcard bench/lib/*.h) bench/tests/tt.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -Ibench/tests -o $@ $< $(OUT)/lib.a $(LDFLAGS_ALL) $(LIBS_ALL)

# libFuzzer targets: clang, the whole library rebuilt with coverage.
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -O1 \
	-fsanitize=fuzzer,address,undefined -Ibench/lib $(PKG_CFLAGS)
build/fuzz/%: bench/fuzz/%.c $(LIB_SRC) $(wildcard bench/lib/*.h)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ $< $(LIB_SRC) $(PKG_LIBS) -lm
fuzzers: $(FUZZERS)

# ---- tests ---------------------------------------------------------------
# Each suite writes build/test-results/<suite>.json through scripts/testsuite.py;
# `make test` runs them all (keep going on failure) and sums them.
TS := $(SYSPY) scripts/testsuite.py

test:
	@rm -rf build/test-results
	@$(MAKE) --no-print-directory -k test-run; \
	 $(TS) sum

test-run: test-unit test-asan test-fuzz test-integration test-topologies

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

# ---- running -------------------------------------------------------------
bench: deps all
	@scripts/bench.sh

calibrate: all
	$(SYSPY) scripts/calibrate.py

clean-net:
	$(SYSPY) -m topologies.cleanup

clean:
	rm -rf build
