#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or a developer's: installs what the tests
# need (Debian packages, cargo-fuzz), then runs unit, property, simulation and end-to-end
# tests, checks that the core stays free of IO crates, and runs every fuzz target briefly.
#
#   bash tests/run.sh
#
# Knobs (environment):
#   SLUICE_SIM_SEEDS=K   seeds per simulation scenario (default 256 here)
#   SLUICE_SIM_SEED=N    replay one seed
#   FUZZ_SECONDS=S       seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# ---- install what the tests need -------------------------------------------------------------
# python3 (the system one, which user `nobody` can run) and util-linux (setpriv): the tests that
# play another local user (a control socket squatter, a Unix admin socket client).
# chromium: the admin page's test drives a real headless browser (through puppeteer-core, below).
APT_PACKAGES=(nginx libnginx-mod-stream haproxy wrk curl iperf3 nghttp2-client openssl python3 util-linux iproute2 iptables chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x target/test-venv/bin/python ] || ! target/test-venv/bin/python -c 'import websockets, grpc, envoy.service.discovery.v3.ads_pb2_grpc' 2>/dev/null; then
  step "installing Python test peers (tests/requirements.txt) into target/test-venv"
  python3 -m venv target/test-venv
  target/test-venv/bin/pip install -q -r tests/requirements.txt
fi
if [ ! -d tests/bolt/node_modules ] || [ tests/bolt/package-lock.json -nt tests/bolt/node_modules ]; then
  command -v npm >/dev/null 2>&1 || {
    echo "npm is missing: the Bolt end-to-end tests need Node.js and npm (Debian: apt-get install nodejs npm)" >&2
    exit 1
  }
  step "installing the SOFARPC test peers (tests/bolt/package-lock.json) into tests/bolt/node_modules"
  (cd tests/bolt && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch tests/bolt/node_modules
fi
if [ ! -d tests/browser/node_modules ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
  step "installing puppeteer-core (tests/browser/package-lock.json; it drives Debian's chromium) into tests/browser/node_modules"
  (cd tests/browser && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch tests/browser/node_modules
fi
if [ ! -d tests/grpc/node_modules ] || [ tests/grpc/package-lock.json -nt tests/grpc/node_modules ]; then
  step "installing grpc-js (tests/grpc/package-lock.json) into tests/grpc/node_modules"
  (cd tests/grpc && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch tests/grpc/node_modules
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install --locked cargo-fuzz@0.13.2
fi

# ---- the core stays sans-IO ------------------------------------------------------------------
step "checking that sluice-core depends on no IO crate"
if cargo tree -p sluice-core -e normal --prefix none | grep -E '^(tokio|turmoil|mio|socket2|hyper|h2|tonic)( |$)'; then
  echo "sluice-core must not depend on the crates above" >&2
  exit 1
fi

# ---- unit, property, simulation and end-to-end tests ----------------------------------------
step "cargo nextest run --workspace (SLUICE_SIM_SEEDS=${SLUICE_SIM_SEEDS:-256})"
SLUICE_REQUIRE_PEERS=1 SLUICE_SIM_SEEDS="${SLUICE_SIM_SEEDS:-256}" cargo nextest run --workspace --no-fail-fast

# ---- fuzzing ---------------------------------------------------------------------------------
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
if [ "$FUZZ_SECONDS" != 0 ]; then
  step "fuzzing every target for ${FUZZ_SECONDS}s"
  bash fuzz/run-all.sh "$FUZZ_SECONDS"
fi

step "all tests passed"
