#!/usr/bin/env bash
# Tools the latency benchmarks need: vegeta (open-loop HTTP load) and ghz (gRPC load), from the Go module proxy,
# in .state/bin, and chantilly (River's deployment tool) in its own virtualenv, since it
# pins an older Flask stack than ours.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.state/bin"
mkdir -p "$bin"
if [[ ! -x "$bin/vegeta" ]]; then
  echo "[bench-tools] building vegeta"
  GOBIN="$bin" go install github.com/tsenart/vegeta/v12@v12.13.0
fi
if [[ ! -x "$bin/ghz" ]]; then
  echo "[bench-tools] building ghz (gRPC load generator)"
  GOBIN="$bin" go install github.com/bojand/ghz/cmd/ghz@v0.120.0
fi
venv="$root/.state/chantilly-venv"
if [[ ! -x "$venv/bin/chantilly" ]]; then
  echo "[bench-tools] installing chantilly into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "chantilly==0.3.0" "river==0.26.1"
fi
