# epmd-rs: the two set-up commands are `make run` (the daemon) and `make test` (every test).
# Short recipes; each target has a comment.

CARGO ?= cargo
PORT ?= 4369
# Debian packages the tests need: real Erlang nodes and the C epmd (erlang-base),
# systemd-socket-activate and systemd-analyze (systemd).
DEB_PACKAGES := erlang-base systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run build test deps bench lint fmt clippy ci clean

# Run the daemon in the foreground on $(PORT) with info logging (Ctrl-C to stop).
run:
	$(CARGO) run --release --locked -- -port $(PORT) -d

# Build the release binary (target/release/epmd-rs).
build:
	$(CARGO) build --release --locked

# Install what the tests need (only what is missing), then run every test.
test: deps
	$(CARGO) test --locked --all-targets

# Install the Debian packages the tests use, if erl or systemd-socket-activate is missing.
deps:
	@if ! command -v erl >/dev/null || ! command -v systemd-socket-activate >/dev/null; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(DEB_PACKAGES); \
	fi

# Side-by-side benchmark against the C epmd and a ceiling server (see docs/PERFORMANCE.md).
bench: deps
	$(CARGO) bench --locked --bench side_by_side

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

# Remove build output.
clean:
	$(CARGO) clean
