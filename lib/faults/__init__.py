"""Fault injection for chaos tests: rules (``rules``), one engine per process (``engine``),
the hooks that break things (``wsgi``, ``metadata``; the data server's disk and broker hooks
live in ``data_server/faults.py``), and how rules and events travel (``sync``, ``events``)."""
