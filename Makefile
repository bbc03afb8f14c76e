# ck: checkpoint/restore for Linux process trees.
#   make            install missing Debian packages (as root), build everything
#   make check      build, then run every test (unit tests and bats end-to-end)
#   make bench      benchmarks, one line per figure: "bench: NAME = VALUE UNIT"
#   make demo       dump and restore a sample process
#   make fuzz       run the libFuzzer targets for a bounded time
#   make faults     the whole fault matrix (tests/faults/run; make check runs a slice)
#   make install PREFIX=/usr/local DESTDIR=
#   make check SANITIZE=address,undefined   the same, tools and tests built with
#                   sanitizers (any -fsanitize= list; thread for the threaded parts)

PREFIX  ?= /usr/local
DESTDIR ?=
B       ?= build
CXX     ?= g++
CC      ?= gcc
CXXFLAGS ?= -O2 -g
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wno-unused-parameter
SANITIZE ?=
SANFLAGS := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer)
ALLCXX  := -std=c++17 $(WARN) -I$(B)/gen -Ilibcommon -MMD -MP $(CXXFLAGS) $(SANFLAGS)
LDLIBS  := $(SANFLAGS) -lprotobuf -lzstd -luv -lpthread

DEB_PKGS := g++ make protobuf-compiler libprotobuf-dev libzstd-dev libuv1-dev libcli11-dev \
            pkg-config bats bats-assert bats-support bats-file python3 iproute2 procps \
            time nodejs socat netcat-openbsd bsdutils vim util-linux nftables redis-server zstd openssh-server openssh-client

LIB_SRC   := $(wildcard libcommon/*.cc)
LIB_OBJ   := $(patsubst %.cc,$(B)/%.o,$(LIB_SRC)) $(B)/gen/ck.pb.o $(B)/parasite/blob.o
TOOLS     := $(notdir $(wildcard tools/ck-*))
TOOL_BIN  := $(addprefix $(B)/bin/,$(TOOLS))
WORKLOADS := $(patsubst tests/workloads/%.c,$(B)/workloads/%,$(wildcard tests/workloads/*.c))
UNIT      := $(patsubst tests/unit/%.cc,$(B)/unit/%,$(wildcard tests/unit/*.cc))
BENCH     := $(patsubst tests/bench/%.cc,$(B)/bench/%,$(wildcard tests/bench/*.cc))
PIPELINES := $(wildcard pipelines/ck-*)

.PHONY: all deps check units bench demo fuzz faults install clean readme-kinds FORCE
.SECONDARY:
MAKEFLAGS += -j$(shell nproc)
all: deps $(B)/.built

# The compiler flags the objects were built with: a change of SANITIZE (or
# CXXFLAGS) rebuilds everything instead of mixing builds.
$(B)/.flags: FORCE
	@mkdir -p $(B)
	@echo '$(CXX) $(ALLCXX) $(LDLIBS)' | cmp -s - $@ || echo '$(CXX) $(ALLCXX) $(LDLIBS)' > $@
FORCE:

$(B)/.built: $(TOOL_BIN) $(WORKLOADS) $(UNIT) $(BENCH) $(B)/faults/failmalloc.so
	@touch $@

# Install what the build and the tests need, if missing (Debian, as root).
# Every rule that runs a tool from these packages (protoc, g++, gcc, ld, ar,
# objcopy) has deps as an order-only prerequisite: with -j, make would
# otherwise start them alongside deps, before apt-get has installed them,
# and the first build on a bare machine fails (tests/bats/make.bats).
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make: missing Debian packages:$$missing (run as root to install)"; exit 1; fi; \
	  echo "make: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(B)/gen/ck.pb.cc $(B)/gen/ck.pb.h: formats/ck.proto | deps
	@mkdir -p $(B)/gen
	protoc --proto_path=formats --cpp_out=$(B)/gen formats/ck.proto

$(B)/gen/ck.pb.o: $(B)/gen/ck.pb.cc $(B)/.flags | deps
	$(CXX) -std=c++17 -O2 -g $(SANFLAGS) -I$(B)/gen -c $< -o $@

$(B)/libcommon/%.o: libcommon/%.cc $(B)/gen/ck.pb.h $(B)/.flags | deps
	@mkdir -p $(dir $@)
	$(CXX) $(ALLCXX) -c $< -o $@

# The page parasite (libcommon/parasite/): freestanding C linked into a flat,
# relocation-free binary, embedded in libck as bytes.  The link fails if
# the code needs anything but itself (a libc call, writable data).
PARASITE_CFLAGS := -O2 -std=gnu11 -ffreestanding -fno-builtin -fPIE -fvisibility=hidden -fno-stack-protector \
                   -fno-asynchronous-unwind-tables -fcf-protection=none -fno-tree-loop-distribute-patterns \
                   -Wall -Wextra -Werror -Ilibcommon
$(B)/parasite/pages.bin: libcommon/parasite/pages.c libcommon/parasite/parasite.ld libcommon/parasite_abi.h | deps
	@mkdir -p $(B)/parasite
	$(CC) $(PARASITE_CFLAGS) -c $< -o $(B)/parasite/pages.o
	$(LD) --no-dynamic-linker -nostdlib -T libcommon/parasite/parasite.ld -o $(B)/parasite/pages.elf $(B)/parasite/pages.o
	@if readelf -r $(B)/parasite/pages.elf | grep -q 'Relocation section'; then echo "parasite: has relocations"; exit 1; fi
	objcopy -O binary -j .text $(B)/parasite/pages.elf $@

$(B)/parasite/blob.o: libcommon/parasite/blob.S $(B)/parasite/pages.bin | deps
	$(CC) -c -Wa,-I$(B)/parasite $< -o $@

$(B)/libck.a: $(LIB_OBJ) | deps
	ar rcs $@ $^

$(B)/tools/%.o: tools/%.cc $(B)/gen/ck.pb.h $(B)/.flags | deps
	@mkdir -p $(dir $@)
	$(CXX) $(ALLCXX) -c $< -o $@

.SECONDEXPANSION:
tool_objs = $(patsubst %.cc,$(B)/%.o,$(wildcard tools/$(1)/*.cc))
$(B)/bin/%: $$(call tool_objs,$$*) $(B)/libck.a | deps
	@mkdir -p $(B)/bin
	$(CXX) -o $@ $(filter %.o,$^) $(B)/libck.a $(LDLIBS)

$(B)/workloads/%: tests/workloads/%.c tests/workloads/wl.h | deps
	@mkdir -p $(B)/workloads
	$(CC) $(CFLAGS) -Wall -Wextra -Werror -o $@ $< -lpthread -lrt

# The fault matrix's allocation-failure shim (LD_PRELOAD), never sanitized:
# it stands in for the allocator the sanitizers replace.
$(B)/faults/failmalloc.so: tests/faults/failmalloc.c | deps
	@mkdir -p $(B)/faults
	$(CC) -O2 -g -Wall -Wextra -Werror -fPIC -shared -o $@ $<

$(B)/unit/%: tests/unit/%.cc $(B)/libck.a $(B)/.flags | deps
	@mkdir -p $(B)/unit
	$(CXX) $(ALLCXX) -o $@ $< $(B)/libck.a $(LDLIBS)

$(B)/bench/%: tests/bench/%.cc $(B)/libck.a $(B)/.flags | deps
	@mkdir -p $(B)/bench
	$(CXX) $(ALLCXX) -o $@ $< $(B)/libck.a $(LDLIBS)

# The unit tests alone (CI builds them sanitized into build/san, where
# tests/run-all finds and runs them too: make B=build/san SANITIZE=... units).
units: deps $(UNIT)

# Sanitized runs stop at the first report; leak checks stay on.  The
# tools keep their own fault handlers (the crash tests of log.bats need them).
check: all
	@$(if $(SANITIZE),ASAN_OPTIONS=detect_leaks=1:handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1) tests/run-all

bench: all
	@tests/bench/run

demo: all
	@tests/demo.sh

# README's table of resource kinds, from the one list (libcommon/kinds.cc);
# tests/bats/kinds.bats fails while README is stale.
readme-kinds: all
	@$(B)/bin/ck-crit kinds --markdown > $(B)/kinds.md
	@awk -v f=$(B)/kinds.md '/^<!-- kinds: /{print; while ((getline l < f) > 0) print l; skip = 1; next} \
	  /^<!-- end of kinds -->/{skip = 0} !skip' README.md > $(B)/README.md && mv $(B)/README.md README.md

faults: all
	@tests/faults/run

fuzz: deps $(B)/gen/ck.pb.h
	@tests/fuzz/run

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man7
	install -m755 $(TOOL_BIN) $(PIPELINES) $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)$(PREFIX)/lib/ck
	install -m644 pipelines/stages.sh $(DESTDIR)$(PREFIX)/lib/ck/
	for m in man/*.[157]; do s=$${m##*.}; install -m644 $$m $(DESTDIR)$(PREFIX)/share/man/man$$s/; done

clean:
	rm -rf $(B)

-include $(shell find $(B) -name '*.d' 2>/dev/null)
