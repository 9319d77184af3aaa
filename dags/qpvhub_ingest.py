"""### qpvhub — ingestion

One DAG per entry of `include/sources/*.yml`: fetch → stage → validate (Great Expectations) →
promote, emitting the asset `qpvhub://<schema>/<table>`. Adding a source file adds a DAG; the logic
lives in the `qpvhub` package (plugins/qpvhub).
"""

from qpvhub.airflow.factory import ingest_dags

globals().update(ingest_dags())
