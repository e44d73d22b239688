#!/usr/bin/env bash
# Install what Tessera needs and make sure RabbitMQ is running (idempotent, non-interactive).
#   - Debian packages: rabbitmq-server and curl, with apt-get, only when missing;
#   - Python packages: this project and its test extras, with pip, from setup.cfg;
#   - RabbitMQ: started with `rabbitmq-server -detached` when installed but stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
RABBITMQ_WAIT=${RABBITMQ_WAIT:-90}

need_apt=()
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v python >/dev/null 2>&1 || need_apt+=(python-is-python3)   # the book's `python -m ...`
if [ ${#need_apt[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "setup: installing ${need_apt[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "setup: please install ${need_apt[*]} (e.g. sudo apt-get install ${need_apt[*]})" >&2
        exit 1
    fi
fi

"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 \
    | grep -v "Running pip as the 'root' user" || true
"$PYTHON" -c "import flask, pika, pyeclib, isal, gunicorn, requests, elasticsearch, pytest" || {
    echo "setup: Python dependencies failed to install" >&2; exit 1; }

broker_up() {
    "$PYTHON" - <<'PY'
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

if ! broker_up; then
    echo "setup: starting RabbitMQ (rabbitmq-server -detached)" >&2
    PATH="$PATH:/usr/sbin" rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq "$RABBITMQ_WAIT"); do
        broker_up && break
        sleep 1
    done
    broker_up || { echo "setup: RabbitMQ did not come up on ${RABBITMQ_SERVER:-127.0.0.1:5672}" >&2; exit 1; }
fi
echo "setup: ready (RabbitMQ reachable, Python packages installed)" >&2
