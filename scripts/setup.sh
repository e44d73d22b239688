#!/usr/bin/env bash
# Install what Tessera needs and make sure RabbitMQ is running (idempotent, non-interactive).
#   - Debian packages, with apt-get, only those missing: python3, python3-venv, rabbitmq-server,
#     curl, openssl; with --test also the clients the probe tests drive (rclone, s3cmd,
#     chromium, chromium-driver);
#   - .venv/: a virtual environment made with $PYTHON (default Debian's /usr/bin/python3), with
#     this project and its test extras installed by pip from setup.cfg. The system Python is
#     never touched. A stamp keyed by setup.cfg and pyproject.toml skips pip (and the package
#     index) when nothing changed since the last install;
#   - RabbitMQ: started with `rabbitmq-server -detached` when installed but stopped. It stays up
#     after the cluster or the tests stop (`rabbitmqctl stop` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."

TEST_PACKAGES=0
for arg in "$@"; do
    case $arg in
        --test) TEST_PACKAGES=1 ;;
        *) echo "usage: scripts/setup.sh [--test]" >&2; exit 2 ;;
    esac
done

if [ -z "${PYTHON:-}" ]; then
    if command -v apt-get >/dev/null 2>&1; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
VENV=.venv
STAMP=$VENV/.tessera-installed
RABBITMQ_WAIT=${RABBITMQ_WAIT:-90}

# --- Debian packages ---------------------------------------------------------------------------
installed() {   # a Debian package, or where there is no dpkg, the command it provides
    if command -v dpkg-query >/dev/null 2>&1; then
        dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'
    else
        command -v "${2:-$1}" >/dev/null 2>&1
    fi
}

need_apt=()
if [ "$PYTHON" = /usr/bin/python3 ]; then
    installed python3 || need_apt+=(python3)
    installed python3-venv || need_apt+=(python3-venv)   # ensurepip: Debian ships it apart
fi
packages=(rabbitmq-server curl openssl)
[ "$TEST_PACKAGES" = 1 ] && packages+=(rclone s3cmd chromium chromium-driver)
for package in "${packages[@]}"; do
    case $package in
        chromium-driver) installed "$package" chromedriver || need_apt+=("$package") ;;
        *) installed "$package" || need_apt+=("$package") ;;
    esac
done

if [ ${#need_apt[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "setup: installing ${need_apt[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq </dev/null
        apt-get install -y -qq --no-install-recommends "${need_apt[@]}" </dev/null >/dev/null || {
            echo "setup: apt-get could not install ${need_apt[*]} (its error is above)" >&2
            exit 1; }
    else
        echo "setup: please install ${need_apt[*]} (e.g. sudo apt-get install ${need_apt[*]})" >&2
        exit 1
    fi
fi

# --- the virtual environment -------------------------------------------------------------------
version_of() { "$1" -c 'import sys; print(sys.version)' 2>/dev/null; }

base_version=$(version_of "$PYTHON") || {
    echo "setup: cannot run $PYTHON (set PYTHON to a Python >= 3.10)" >&2; exit 1; }

# A .venv without a working pip (a `python3 -m venv` that stopped half-way, say, before
# python3-venv was installed) or made by another Python is made again.
if [ -e "$VENV" ]; then
    if [ "$(version_of "$VENV/bin/python")" != "$base_version" ] \
            || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        echo "setup: $VENV is incomplete or was made by another Python: making it again" >&2
        rm -rf "$VENV"
    fi
fi
if [ ! -e "$VENV" ]; then
    echo "setup: making the virtual environment $VENV with $PYTHON" >&2
    "$PYTHON" -m venv "$VENV" || {
        rm -rf "$VENV"
        echo "setup: $PYTHON -m venv failed (its error is above); on Debian, apt-get install" \
             "python3-venv provides it" >&2
        exit 1; }
fi

key=$( { cat setup.cfg pyproject.toml; pwd; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$key" ]; then
    echo "setup: installing this package and its dependencies into $VENV with pip" >&2
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]" || {
        echo "setup: pip could not install the Python packages (its error is above)." \
             "Check that the package index is reachable (pip's proxy and index settings apply);" \
             "a package that has no wheel for this Python is built from source, which needs" \
             "apt-get install gcc python3-dev. Then run scripts/setup.sh again." >&2
        exit 1; }
    "$VENV/bin/python" -c "import flask, pika, pyeclib, isal, gunicorn, requests, elasticsearch, pytest" || {
        echo "setup: the Python packages installed but do not import (the error is above)" >&2
        exit 1; }
    echo "$key" > "$STAMP"
fi

# --- RabbitMQ ----------------------------------------------------------------------------------
broker_up() {
    "$VENV/bin/python" - <<'PY'
import os, sys, pika
url = os.environ.get("RABBITMQ_SERVER", "amqp://guest:guest@127.0.0.1:5672/")
try:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 2
    pika.BlockingConnection(params).close()
except Exception:
    sys.exit(1)
PY
}

broker=$(echo "${RABBITMQ_SERVER:-amqp://guest:guest@127.0.0.1:5672/}" | sed 's|//[^@/]*@|//|')   # no password
if ! broker_up; then
    echo "setup: starting RabbitMQ (rabbitmq-server -detached)" >&2
    PATH="$PATH:/usr/sbin" rabbitmq-server -detached </dev/null >/dev/null 2>&1 || true
    for _ in $(seq "$RABBITMQ_WAIT"); do
        broker_up && break
        sleep 1
    done
    broker_up || { echo "setup: RabbitMQ did not come up on $broker" >&2; exit 1; }
    echo "setup: RabbitMQ started; it stays up after the cluster and the tests stop" \
         "(rabbitmqctl stop stops it)" >&2
fi
echo "setup: ready ($VENV/bin/python has the packages; RabbitMQ reachable at $broker)" >&2
