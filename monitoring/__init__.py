"""Dashboards and alert rules of HybridInference, generated from Python (the one source of truth).

`python -m monitoring` writes the Grafana dashboard JSON, the plain Prometheus rules file and the Helm
chart's copies of both; `python -m monitoring --check` fails when a checked-in copy is out of date.
"""
