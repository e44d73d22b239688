"""The console's cluster page: data servers live or down, their disks and shard counts, the
task queue and repairs (``api_server.admin.inspect``, the same figures as /api/v1/stats), and
the recent repairs of the whole cluster (the repair log, as /api/v1/repairs)."""
from __future__ import annotations

from flask import redirect, render_template, url_for

from api_server.admin import inspect
from api_server.console import api, bp

#: Recent repairs the cluster page lists.
RECENT_REPAIRS = 20


@bp.get("/")
def index():
    return redirect(url_for("console.cluster_page"), 303)


@bp.get("/cluster")
def cluster_page():
    servers = inspect.nodes(api())
    return render_template("console/cluster.html", nodes=servers,
                           stats=inspect.stats(api(), servers),
                           down=sum(s["state"] != "live" for s in servers),
                           repairs=inspect.recent_repairs(api(), RECENT_REPAIRS))
