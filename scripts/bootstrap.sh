#!/usr/bin/env bash
# Make sure the system packages edged needs are present: Python >= 3.10 with venv,
# a C/C++ compiler (llama-cpp-python builds from source), and Mosquitto with its clients.
# Installs what is missing from the OS packages when allowed (root, or sudo without a
# password); otherwise stops with one line saying what to run.
#
#   scripts/bootstrap.sh            everything
#   scripts/bootstrap.sh mosquitto  only the broker and its clients
set -euo pipefail

want=${1:-all}
missing=()

have() { command -v "$1" >/dev/null 2>&1; }

if [ "$want" = all ]; then
  py=${PYTHON:-python3}
  if ! have "$py"; then
    missing+=(python3 python3-venv)
  else
    if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
      echo "edged: $py is $("$py" -V 2>&1); edged needs Python 3.10 or newer (set PYTHON=...)" >&2
      exit 1
    fi
    "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  fi
  { have g++ || have c++; } || missing+=(g++)
  { have gcc || have cc; } || missing+=(gcc)
fi
have mosquitto || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
have mosquitto_pub || missing+=(mosquitto-clients)
# the tests score the hardened unit with `systemd-analyze security --offline`
if [ "$want" = mosquitto ]; then have systemd-analyze || missing+=(systemd); fi

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then
  sudo=()
elif have sudo && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "edged: missing system packages; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
if ! have apt-get; then
  echo "edged: missing ${missing[*]}; install them with your OS package manager" >&2
  exit 1
fi
echo "edged: installing ${missing[*]} from the OS packages" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
