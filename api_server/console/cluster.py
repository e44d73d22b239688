"""The console's cluster page: data servers live or down, their disks and shard counts, the
task queue and repairs (``api_server.admin.inspect``, the same figures as /api/v1/stats)."""
from __future__ import annotations

from flask import redirect, render_template, url_for

from api_server.admin import inspect
from api_server.console import api, bp


@bp.get("/")
def index():
    return redirect(url_for("console.cluster_page"), 303)


@bp.get("/cluster")
def cluster_page():
    servers = inspect.nodes(api())
    return render_template("console/cluster.html", nodes=servers, stats=inspect.stats(api()),
                           down=sum(s["state"] != "live" for s in servers))
