"""### qpvhub — partners' address lookup

Every 10 minutes: the CSV files partners dropped under `partners/<id>/inbox/` are located against the QPV
perimeters (addresses through IGN's Géoplateforme), each result written to the partner's outbox, the input
deleted. Counts only are logged and kept.
"""

from qpvhub.airflow.factory import locate_dags

globals().update(locate_dags())
