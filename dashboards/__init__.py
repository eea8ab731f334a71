"""Dashboards proven against real data: Kibana objects for analysts, Grafana for SREs, alert rules.

``kibana.py`` and ``grafana.py`` hold each panel once; ``python -m dashboards generate`` writes
``kibana/xrides.ndjson`` and ``grafana/xrides.json`` from them, ``kibana-import`` loads the NDJSON
into a Kibana, ``preview`` renders the Kibana charts to PNG (``docs/dashboards.md``).
"""
