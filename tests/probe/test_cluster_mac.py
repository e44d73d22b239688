"""Data servers answer cluster members only (issue 11.7): curl without a Cluster-Mac gets 403
from a real data server, and nothing changes on its disk."""
from __future__ import annotations

import os

import pytest

from lib.clustermac import HEADER, ClusterMac, derive_key
from lib.hashing import quote_hash
from tests.conftest import sha256_b64
from tests.probe.conftest import Client, curl

pytestmark = pytest.mark.probe


def _disk(cluster) -> dict[str, tuple[int, float]]:
    """Every file under every data server's storage root: (size, mtime)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for node in cluster.data
            for p in node.storage_root.rglob("*") if p.is_file()}


def _status(*args: str) -> int:
    return int(curl("-o", "/dev/null", "-w", "%{http_code}", *args).stdout)


def test_curl_without_a_mac_changes_nothing_on_a_data_server(client: Client):
    data = os.urandom(5000)
    hash_ = sha256_b64(data)
    assert client.put(f"mac-{hash_[:8]}", data, hash_).status_code == 200
    (index, (path,)), *_ = client.shard_files(hash_).items()
    node = next(n for n in client.cluster.data if path.is_relative_to(n.storage_root))
    base = f"http://{node.address}"
    shard = f"{quote_hash(hash_)}.{index}"
    before = _disk(client.cluster)
    for args in (["-X", "DELETE", f"{base}/objects/{shard}"],
                 ["-X", "DELETE", f"{base}/objects/{quote_hash(hash_)}"],
                 ["-X", "POST", f"{base}/garbage/{shard}?older_than=0"],
                 ["-X", "DELETE", f"{base}/garbage/?older_than=0"],
                 ["-X", "POST", "--data-binary", "x" * 100, "-H", "Size: 100",
                  f"{base}/temp/{shard}?commit=1"],
                 ["-X", "POST", "-H", "Size: 100", f"{base}/temp/{shard}"],
                 [f"{base}/objects/{shard}"], ["-I", f"{base}/objects/{shard}"],
                 [f"{base}/objects/"],
                 ["-X", "DELETE", "-H", f"{HEADER}: 1:00", f"{base}/objects/{shard}"]):
        assert _status(*args) == 403, args
    assert _disk(client.cluster) == before
    assert client.get(f"mac-{hash_[:8]}").content == data
    assert _status(f"{base}/health") == 200

    secret = client.cluster.env_for(node)["CLUSTER_SECRET"].encode()
    member = ClusterMac(derive_key(secret)).sign("GET", f"/objects/{shard}")
    assert _status("-H", f"{HEADER}: {member}", f"{base}/objects/{shard}") == 200
