"""scripts/grafana/tessera.json: a dashboard Grafana imports (schema >= 36, a Prometheus
datasource variable), whose every query names series Tessera's processes really export."""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

import api_server
import data_server
from lib import metrics
from lib.config import Config
from lib.rabbitmq import Bus
from lib.tasks import TaskQueues
from scripts import worker

DASHBOARD = Path(__file__).resolve().parents[2] / "scripts" / "grafana" / "tessera.json"
_SERIES = re.compile(r"\b(tessera_[a-z0-9_]+)")


def exported(tmp_path, monkeypatch) -> set[str]:
    """Every sample name an api server, a data server and the worker answer at /metrics."""
    config = Config(listen_address="127.0.2.1:1", metadata_db=tmp_path / "md.db",
                    storage_root=tmp_path / "root")
    api = api_server.create_app(config, bus=Bus(config.rabbitmq_server, "never-started"))
    texts = []
    for app in (api, data_server.create_app(config, bus=None)):
        app.test_client().get("/health", buffered=True)        # a request has been served
        texts.append(app.test_client().get("/metrics").text)
    api.extensions["tessera.stop"]()
    monkeypatch.setattr(worker, "_queue_counts", lambda _c, _q: {"tasks": (3, 1),
                                                                  "dead": (0, 0)})
    cluster = SimpleNamespace(registry=SimpleNamespace(live=lambda: ["127.0.1.1:1"]))
    texts.append(metrics.exposition(worker._collectors(config, TaskQueues("q"), cluster))
                 .decode())
    return {sample.name for text in texts for family in text_string_to_metric_families(text)
            for sample in family.samples}


def test_the_dashboard_imports_and_queries_only_exported_series(tmp_path, monkeypatch):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    variables = dashboard["templating"]["list"]
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" and
               v["name"] == "datasource" for v in variables)
    names = exported(tmp_path, monkeypatch)
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 15
    queried = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            series = _SERIES.findall(target["expr"])
            assert series, (panel["title"], target["expr"])
            missing = set(series) - names
            assert not missing, (panel["title"], missing)
            queried.update(series)
    # the list: requests, latency, bytes, repairs, corrupt records, locate latency and
    # cache, live data servers, queue depth, disk used and free, CPU and RSS
    for wanted in ("tessera_request_duration_seconds_count",
                   "tessera_request_duration_seconds_bucket",
                   "tessera_received_bytes_total", "tessera_sent_bytes_total",
                   "tessera_repairs_total", "tessera_corrupt_records_total",
                   "tessera_locate_duration_seconds_bucket", "tessera_location_cache_total",
                   "tessera_live_data_servers", "tessera_task_queue_depth",
                   "tessera_disk_used_bytes", "tessera_disk_free_bytes",
                   "tessera_process_cpu_seconds_total", "tessera_process_resident_memory_bytes"):
        assert wanted in queried, wanted
