"""### qpvhub — publication

One DAG per region of `include/regions/*.yml`, triggered by the indicators asset: versioned,
checksummed extracts to the object store, then `latest/`.
"""

from qpvhub.airflow.factory import publish_dags

globals().update(publish_dags())
