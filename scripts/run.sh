#!/usr/bin/env bash
# The README's first command: install what is needed, then run a local cluster until Ctrl-C
# (6 data servers on 127.0.1.1-6, 2 api servers on 127.0.2.1-2, port 12345, SQLite, RabbitMQ)
# with the project's .venv Python.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m scripts.cluster "$@"
