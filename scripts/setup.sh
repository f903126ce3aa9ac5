#!/usr/bin/env bash
# Installs what greenredis needs, idempotently: redis-server (Debian package, when
# root), a virtualenv in .venv with the package and, with --test, its test extras
# and the chromium browser the browser test drives. Sourced by run.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_install() {   # apt_install COMMAND PACKAGE...
    local cmd=$1; shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing $* (apt-get)"
        if [ ! -e /tmp/.greenredis-apt-updated ]; then
            apt-get update -qq && touch /tmp/.greenredis-apt-updated
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        echo "setup: '$cmd' is missing. Install it first, e.g.: sudo apt-get install -y $*" >&2
        exit 1
    fi
}

apt_install redis-server redis-server
apt_install openssl openssl
apt_install gcc gcc python3-dev   # python-lzf (LZF in C for the RDB parser) builds from source
[ $want_test = 1 ] && apt_install chromium chromium

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.greenredis-installed$want_test
if [ ! -e "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
    echo "setup: installing greenredis into .venv"
    extras=""; [ $want_test = 1 ] && extras="[test]"
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
    touch "$stamp"
fi
