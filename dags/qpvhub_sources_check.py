"""### qpvhub — sources check

Weekly probe of every catalogue entry's production location (reachable, size, date, checksum) and of
its layout against the declared columns; fails (and notifies) when one is unreachable or drifted.
"""

from qpvhub.airflow.factory import sources_check_dags

globals().update(sources_check_dags())
