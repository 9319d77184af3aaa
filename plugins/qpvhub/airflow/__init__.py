"""Airflow integration: the DAG factory building DAGs from the catalogue, callbacks, assets."""
