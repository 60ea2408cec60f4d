#!/usr/bin/env bash
# Installs, when missing, what building pinpipe needs besides Rust: a C toolchain, make, perl
# and CMake (bundled librdkafka, vendored OpenSSL and curl). Sourced by demo.sh and test.sh,
# with extra COMMAND:PACKAGE pairs as arguments; `--` alone means none (a script sourced
# without arguments would see its caller's, such as `demo.sh --rows 1000`).
need_apt=()
[ "${1:-}" = "--" ] && shift
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
