"""qpvhub's DAG files: thin modules that build their DAGs with qpvhub.airflow.factory (`make lint` checks
they import nothing else of the package)."""
