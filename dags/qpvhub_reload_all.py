"""### qpvhub — reload everything

Manual DAG: every catalogue source through the same pipeline, dependencies first; the indicators and
publication follow through the assets.
"""

from qpvhub.airflow.factory import reload_all_dags

globals().update(reload_all_dags())
