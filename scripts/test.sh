#!/usr/bin/env bash
# The README's second command: install what is needed (with the clients the probe tests drive),
# then run the whole test suite (unit, functional, probe) with the project's .venv Python.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
