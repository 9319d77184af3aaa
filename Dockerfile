# Airflow 3.3 with qpvhub installed: the image every Airflow service of docker-compose.yml runs.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

USER root
# GDAL command-line tools to inspect extracts (ogrinfo); psql for analysts' checks; Chromium prints the fiches
# quartier to PDF (publish).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gdal-bin postgresql-client chromium \
 && rm -rf /var/lib/apt/lists/*

USER airflow
COPY --chown=airflow:root pyproject.toml README.md constraints.txt /opt/qpvhub/
COPY --chown=airflow:root plugins /opt/qpvhub/plugins
RUN pip install --no-cache-dir -c /opt/qpvhub/constraints.txt "apache-airflow==${AIRFLOW_VERSION}" /opt/qpvhub
COPY --chown=airflow:root dags /opt/qpvhub/dags
COPY --chown=airflow:root include /opt/qpvhub/include
COPY --chown=airflow:root sql /opt/qpvhub/sql

ENV QPVHUB_PROJECT_DIR=/opt/qpvhub \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/qpvhub/dags \
    GX_ANALYTICS_ENABLED=False
