"""### qpvhub — indicators

Recomputes `mart.qpv_indicator` and `mart.qpv_profile` from `sql/indicators/` whenever a source asset
is updated; emits `qpvhub://mart/qpv_indicator`.
"""

from qpvhub.airflow.factory import indicators_dags

globals().update(indicators_dags())
