"""### qpvhub — health

Daily freshness check of every catalogue source against its schedule; fails (and notifies the
webhook, when configured) when a source is stale or was never loaded.
"""

from qpvhub.airflow.factory import health_dags

globals().update(health_dags())
