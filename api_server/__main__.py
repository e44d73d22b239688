"""``python -m api_server``: serve the REST API on LISTEN_ADDRESS under gunicorn."""
from api_server import create_app
from lib.config import Config
from lib.server import run

if __name__ == "__main__":
    run(create_app, Config.from_env(), "api_server")
