#!/usr/bin/env bash
# Test tools from Debian's packages: promtool (package prometheus) checks /metrics and the alert rules.
set -euo pipefail
if ! command -v promtool >/dev/null; then
  echo "[tools] installing Debian's prometheus package for promtool"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
