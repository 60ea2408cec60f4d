#!/usr/bin/env bash
# Installs, when missing, what building pinpipe needs besides Rust: a C toolchain, make, perl
# and CMake (bundled librdkafka, vendored OpenSSL and curl). Sourced by demo.sh and test.sh.
need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v make >/dev/null || need_apt+=(make)
command -v perl >/dev/null || need_apt+=(perl)
command -v cmake >/dev/null || need_apt+=(cmake)
for extra in "$@"; do # COMMAND:PACKAGE
  command -v "${extra%%:*}" >/dev/null || need_apt+=("${extra#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q && $SUDO apt-get install -y -q "${need_apt[@]}"
fi
