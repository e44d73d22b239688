"""``python -m data_server``: serve one STORAGE_ROOT on LISTEN_ADDRESS under gunicorn.

One worker process (the ObjectIndex lives in its memory) with many threads.
"""
import dataclasses

from data_server import create_app
from lib.config import Config
from lib.server import run

if __name__ == "__main__":
    config = Config.from_env()
    config.require_storage_root()
    run(create_app, dataclasses.replace(config, workers=1), "data_server")
