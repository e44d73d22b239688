"""In-process data servers and their test clients share one cluster secret (lib/clustermac)."""
from __future__ import annotations

from flask.testing import FlaskClient

from data_server.gate import request_target
from lib.clustermac import ENVIRON_KEY, ClusterMac, derive_key
from lib.config import Config

SECRET = "functional-tests-cluster-secret-0123456789abcdef"
MAC = ClusterMac(derive_key(SECRET.encode()))


def data_config(**fields) -> Config:
    """A data server's (or its clients') Config with the tests' cluster secret."""
    return Config(cluster_secret=SECRET, **fields)


class SignedClient(FlaskClient):
    """A Flask test client whose every request carries a valid Cluster-Mac, as the api
    server's would."""

    def run_wsgi_app(self, environ, buffered=False):
        environ[ENVIRON_KEY] = MAC.sign(environ["REQUEST_METHOD"], request_target(environ))
        return super().run_wsgi_app(environ, buffered)


def signed_client(app) -> FlaskClient:
    return SignedClient(app, app.response_class)
