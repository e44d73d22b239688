#!/usr/bin/env bash
# The README's second command: install what is needed, then run the whole test suite
# (unit, functional, probe). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider "$@"
