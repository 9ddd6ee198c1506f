# epmd-rs: the two set-up commands are `make run` (the daemon) and `make test` (every test).
# Short recipes; each target has a comment.

CARGO ?= cargo
PORT ?= 4369
# Debian packages the tests need: real Erlang nodes and the C epmd (erlang-base),
# systemd-socket-activate and systemd-analyze (systemd), network namespaces (iproute2),
# man for rendering the generated man page (man-db), building and checking the Debian
# packages (dpkg-dev, lintian), and TLS distribution nodes with a self-signed certificate
# for the cluster tests (erlang-ssl, openssl); a real Prometheus server and promtool for the
# --metrics-listen tests (prometheus, 19 MB download, 96 MB installed).
DEB_PACKAGES := erlang-base systemd iproute2 man-db dpkg-dev lintian erlang-ssl openssl prometheus
# systemd-nspawn and python3 for the real-systemd tests (root only), without its recommends.
DEB_PACKAGES_NO_RECOMMENDS := systemd-container python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run build test deps bench difftest fuzz fuzz-ci lint fmt clippy ci clean install uninstall install-as-epmd uninstall-as-epmd deb deb-lint

# Installation layout (make install PREFIX=/usr DESTDIR=/tmp/stage).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(PREFIX)/bin
UNITDIR := $(PREFIX)/lib/systemd/system
MANDIR := $(PREFIX)/share/man/man1
BASHDIR := $(PREFIX)/share/bash-completion/completions
ZSHDIR := $(PREFIX)/share/zsh/site-functions
FISHDIR := $(PREFIX)/share/fish/vendor_completions.d
# The epmd that erl runs ($$BINDIR/epmd of the installed erts); install-as-epmd replaces it.
ERTS_EPMD ?= $(firstword $(wildcard /usr/lib/erlang/erts-*/bin/epmd))
# How install-as-epmd moves the C epmd aside: dpkg-divert (survives package upgrades) or mv.
DIVERT ?= $(if $(shell command -v dpkg-divert),dpkg-divert,mv)
GEN := target/generated
# The binary to install; given explicitly (BIN=target/debug/epmd-rs), nothing is built.
BIN ?=
INSTALL_BIN := $(or $(BIN),target/release/epmd-rs)

# Run the daemon in the foreground on $(PORT) with info logging (Ctrl-C to stop).
run:
	$(CARGO) run --release --locked -- -port $(PORT) -d

# Build the release binary (target/release/epmd-rs).
build:
	$(CARGO) build --release --locked

# Install what the tests need (only what is missing), then run every test.
test: deps
	@if [ "$$(id -u)" != 0 ] || ! command -v systemd-nspawn >/dev/null; then \
		echo "make test: SKIPPING the real-systemd tests (tests/it/real_systemd.rs): they need root and systemd-nspawn"; \
	else echo "make test: the real-systemd tests run (root, systemd-nspawn found)"; fi
	$(CARGO) test --locked --all-targets

# Install the Debian packages the tests use, if any of their commands is missing.
deps:
	@if ! command -v erl >/dev/null || ! command -v systemd-socket-activate >/dev/null \
		|| ! command -v ip >/dev/null || ! command -v man >/dev/null \
		|| ! command -v dpkg-gencontrol >/dev/null || ! command -v lintian >/dev/null \
		|| ! command -v openssl >/dev/null || ! command -v promtool >/dev/null || ! ls -d /usr/lib/erlang/lib/ssl-* >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(DEB_PACKAGES); \
	fi
	@if [ "$$(id -u)" = 0 ] && { ! command -v systemd-nspawn >/dev/null || ! command -v python3 >/dev/null; }; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends $(DEB_PACKAGES_NO_RECOMMENDS); \
	fi

# Side-by-side benchmark against the C epmd and a ceiling server (see docs/PERFORMANCE.md).
bench: deps
	$(CARGO) bench --locked --bench side_by_side

# Differential tests against the C epmd (release build): the generated command-line table,
# then SECONDS (default 60) of generated wire scenarios; prints cases, scenarios, requests and
# divergences. DIFFTEST_SEED=N replays a wire run.
SECONDS ?= 60
difftest: deps
	$(CARGO) test --release --locked --test it difftest_cli -- --nocapture
	DIFFTEST_SECONDS=$(SECONDS) $(CARGO) test --release --locked --test it \
		difftest_wire::long_run -- --ignored --nocapture

# Fuzz each target for FUZZ_SECONDS with libFuzzer, on the stable toolchain (fuzz/run.sh:
# no nightly, no cargo-fuzz). New inputs go to fuzz/work-corpus/ (ignored); the committed
# seeds in fuzz/corpus/ are only read; a crash stops it and lands in fuzz/artifacts/.
FUZZ_SECONDS ?= 60
fuzz:
	CARGO="$(CARGO)" fuzz/run.sh $(FUZZ_SECONDS)

# What CI runs: every target for FUZZ_CI_SECONDS from the committed seeds only (a scratch
# work corpus), so an oracle that fails at once cannot go unnoticed; falls back to the
# in-process fuzz bodies only where there is no working C++ compiler (libFuzzer cannot be
# built there); a stale fuzz/Cargo.lock or a compile error fails.
FUZZ_CI_SECONDS ?= 10
fuzz-ci:
	@work=$$(mktemp -d) && trap 'rm -rf "$$work"' EXIT && \
		CARGO="$(CARGO)" FUZZ_FALLBACK=1 FUZZ_QUIET=1 FUZZ_WORK_CORPUS=$$work \
		fuzz/run.sh $(FUZZ_CI_SECONDS)

# Formatting and lints, as CI checks them.
lint: fmt clippy

# Check formatting.
fmt:
	$(CARGO) fmt --all -- --check

# Clippy on every target, warnings are errors.
clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

# What CI runs after installing dependencies.
ci: lint test

# Install the binary, the systemd units (ExecStart pointing at $(BINDIR)), the man page
# and bash/zsh/fish completions under $(DESTDIR)$(PREFIX).
install: $(if $(BIN),,build)
	rm -rf $(GEN) && $(INSTALL_BIN) generate $(GEN)
	install -D -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/epmd-rs
	install -D -m 0644 systemd/epmd-rs.socket $(DESTDIR)$(UNITDIR)/epmd-rs.socket
	sed 's|/usr/local/bin/epmd-rs|$(BINDIR)/epmd-rs|' systemd/epmd-rs.service > $(GEN)/epmd-rs.service
	install -D -m 0644 $(GEN)/epmd-rs.service $(DESTDIR)$(UNITDIR)/epmd-rs.service
	install -D -m 0644 $(GEN)/epmd-rs.1 $(DESTDIR)$(MANDIR)/epmd-rs.1
	install -D -m 0644 $(GEN)/epmd-rs.bash $(DESTDIR)$(BASHDIR)/epmd-rs
	install -D -m 0644 $(GEN)/_epmd-rs $(DESTDIR)$(ZSHDIR)/_epmd-rs
	install -D -m 0644 $(GEN)/epmd-rs.fish $(DESTDIR)$(FISHDIR)/epmd-rs.fish

# Remove what install put there.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/epmd-rs $(DESTDIR)$(UNITDIR)/epmd-rs.socket \
		$(DESTDIR)$(UNITDIR)/epmd-rs.service $(DESTDIR)$(MANDIR)/epmd-rs.1 \
		$(DESTDIR)$(BASHDIR)/epmd-rs $(DESTDIR)$(ZSHDIR)/_epmd-rs $(DESTDIR)$(FISHDIR)/epmd-rs.fish

# Make epmd-rs the epmd that erl starts: move the C epmd aside to epmd.c-epmd and link
# $(ERTS_EPMD) to $(BINDIR)/epmd-rs. Reversible with uninstall-as-epmd.
install-as-epmd:
	@test -n "$(ERTS_EPMD)" || { echo "no erts epmd found; set ERTS_EPMD=" >&2; exit 1; }
	@test ! -e $(ERTS_EPMD).c-epmd || { echo "already installed as epmd" >&2; exit 1; }
	if [ "$(DIVERT)" = dpkg-divert ]; then \
		dpkg-divert --local --rename --add --divert $(ERTS_EPMD).c-epmd $(ERTS_EPMD); \
	else mv $(ERTS_EPMD) $(ERTS_EPMD).c-epmd; fi
	ln -s $(BINDIR)/epmd-rs $(ERTS_EPMD)

# Put the C epmd back.
uninstall-as-epmd:
	@test -e $(ERTS_EPMD).c-epmd || { echo "epmd-rs is not installed as epmd" >&2; exit 1; }
	rm -f $(ERTS_EPMD)
	if [ "$(DIVERT)" = dpkg-divert ]; then \
		dpkg-divert --local --rename --remove --divert $(ERTS_EPMD).c-epmd $(ERTS_EPMD); \
	else mv $(ERTS_EPMD).c-epmd $(ERTS_EPMD); fi

# The Debian packages epmd-rs and epmd-rs-as-epmd (release binary, or BIN=) into
# $(DEB_OUT), with dpkg-dev's tools (debian/build-debs.sh); lintian checks them.
DEB_OUT ?= target/debian
deb: $(if $(BIN),,build)
	debian/build-debs.sh $(INSTALL_BIN) $(DEB_OUT)

# lintian on the packages built by `make deb`: any error or warning fails.
deb-lint: deb
	lintian --fail-on error,warning $(DEB_OUT)/*_$$(dpkg-parsechangelog -S Version)_*.deb

# Remove build output.
clean:
	$(CARGO) clean
