"""``python -m scripts.chaos SCENARIO.json [--duration S] [--root DIR]``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from scripts.chaos import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.chaos",
        description="Load a cluster, inject faults and kill processes on a schedule, then "
                    "verify every acknowledged write (see scripts/chaos/*.json).")
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--duration", type=float, help="seconds of load (default: the "
                        "scenario's); schedule steps past it run at its end")
    parser.add_argument("--root", type=Path, help="keep the cluster's files here "
                        "(default: a temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.ERROR)
    scenario = json.loads(args.scenario.read_text())
    return run(scenario, args.duration, args.root)


if __name__ == "__main__":
    sys.exit(main())
