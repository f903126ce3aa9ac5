#!/usr/bin/env bash
# Installs what greenredis needs, idempotently: redis-server and build tools (Debian
# packages, when root), a virtualenv in .venv with the package and, with --test, its
# test extras and the chromium browser the browser test drives. Run by run.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1
PY=${PYTHON:-python3}

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {   # apt_install PACKAGE... (when root on Debian; otherwise say what to install)
    if [ "$(id -u)" = 0 ] && have apt-get; then
        echo "setup: installing $* (apt-get)"
        if [ ! -e /tmp/.greenredis-apt-updated ]; then
            apt-get update -qq && touch /tmp/.greenredis-apt-updated
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        echo "setup: missing $*. Install it first, e.g.: sudo apt-get install -y $*" >&2
        exit 1
    fi
}

have redis-server || apt_install redis-server
have openssl || apt_install openssl
# The speedups extra (python-lzf: LZF in C for the RDB parser) builds from source: a compiler
# and Python's headers. A deploy (requirements.txt) does without it.
have gcc || apt_install gcc
"$PY" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
    2>/dev/null || apt_install python3-dev
"$PY" -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
[ $want_test = 1 ] && { have chromium || apt_install chromium; }

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.greenredis-installed$want_test
if [ ! -e "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
    echo "setup: installing greenredis into .venv"
    extras="[speedups]"; [ $want_test = 1 ] && extras="[speedups,test]"
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
    touch "$stamp"
fi
