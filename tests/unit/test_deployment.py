"""docker-compose.yml, checked statically (no Docker engine here) with Debian's docker-compose."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package) is required: make setup installs it"
    res = subprocess.run([exe, "--env-file", str(ROOT / ".env.example"), "config"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def test_compose_has_every_service_with_healthchecks(compose: dict) -> None:
    services = compose["services"]
    assert {"postgis", "airflow-db", "minio", "minio-init", "airflow-init", "airflow-apiserver",
            "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"} <= set(services)
    for name in ("postgis", "airflow-db", "minio", "airflow-apiserver", "airflow-scheduler",
                 "airflow-dag-processor", "airflow-triggerer"):
        assert "healthcheck" in services[name], name
    assert services["postgis"]["image"].startswith("postgis/postgis:")


def test_airflow_services_get_qpvhub_connections_and_wait_for_init(compose: dict) -> None:
    import json

    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        svc = compose["services"][name]
        env = svc["environment"]
        assert env["AIRFLOW_CONN_QPVHUB_POSTGIS"].startswith("postgresql://qpvhub:")
        store = json.loads(env["AIRFLOW_CONN_QPVHUB_STORE"])
        assert store["conn_type"] == "aws" and store["extra"] == {"endpoint_url": "http://minio:9000",
                                                                  "bucket": "qpvhub"}
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert svc["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert svc["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_image_installs_this_project_with_the_locked_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM apache/airflow:${AIRFLOW_VERSION}" in dockerfile
    assert "-c /opt/qpvhub/constraints.txt" in dockerfile
    pinned = (ROOT / "constraints.txt").read_text()
    assert "apache-airflow==3.3." in pinned and "great-expectations==1." in pinned.lower().replace("_", "-")


def test_env_example_holds_only_dev_defaults() -> None:
    env = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#"))
    for key, value in env.items():
        if "PASSWORD" in key or "SECRET" in key:
            assert "dev-only" in value, f"{key} in .env.example must be an obvious development default"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_celery_profile_adds_redis_and_scalable_workers(compose: dict) -> None:
    services = compose["services"]
    worker, redis = services["airflow-worker"], services["redis"]
    assert worker["profiles"] == ["celery"] and redis["profiles"] == ["celery"]
    assert worker["command"] == "celery worker" and "healthcheck" in worker and "healthcheck" in redis
    assert "container_name" not in worker and "ports" not in worker  # `--scale airflow-worker=N`
    assert worker["deploy"]["replicas"] == 2  # two workers share a national run's per-region publish tasks
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    env = worker["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"  # CeleryExecutor with AIRFLOW_EXECUTOR=…
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")


def test_the_api_service_has_its_own_image_and_reads_as_qpvhub_api(compose: dict) -> None:
    """The OGC API: its own image (not Airflow's), connecting as the role that reads `pub` only."""
    api = compose["services"]["api"]
    assert api["build"]["dockerfile"] == "Dockerfile.api" and api["image"] != compose["services"][
        "airflow-apiserver"]["image"]
    assert api["environment"]["DATABASE_URL"].startswith("postgresql://qpvhub_api:")
    assert api["environment"]["TIPG_DB_SCHEMAS"] == '["pub"]' and "healthcheck" in api
    assert api["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"  # role's password
    dockerfile = (ROOT / "Dockerfile.api").read_text()
    assert "constraints-api.txt" in dockerfile and "qpvhub_api_app:app" in dockerfile


def test_every_port_listens_on_loopback_unless_configured(compose: dict) -> None:
    published = [(name, p) for name, svc in compose["services"].items() for p in svc.get("ports", [])]
    assert published
    for name, port in published:  # Debian's docker-compose writes "127.0.0.1:8080:8080/tcp"
        host = port["host_ip"] if isinstance(port, dict) else str(port).split(":")[0]
        assert host == "127.0.0.1", (name, port)


def _check_secrets(compose: dict, **env: str) -> subprocess.CompletedProcess:
    """secrets-check's own script, run by a real shell with the environment Compose would give it."""
    svc = compose["services"]["secrets-check"]
    script = svc["command"][0].replace("$$", "$")  # `config` keeps Compose's escaping of the shell's `$`
    environ = {**{k: str(v) for k, v in svc["environment"].items()}, **env, "PATH": "/usr/bin:/bin"}
    return subprocess.run(["sh", "-c", script], env=environ, capture_output=True, text=True, timeout=30)


def test_development_secrets_are_refused_outside_a_development_deployment(compose: dict) -> None:
    assert _check_secrets(compose).returncode == 0  # .env.example says QPVHUB_DEPLOYMENT=dev
    refused = _check_secrets(compose, QPVHUB_DEPLOYMENT="production")
    assert refused.returncode == 1 and "refused: development secrets in a production deployment" in refused.stderr
    assert "POSTGIS_PASSWORD" in refused.stderr and "QPVHUB_API_PASSWORD" in refused.stderr
    strong = {k: "Zr4-" + k.lower() for k in ("POSTGIS_PASSWORD", "AIRFLOW_DB_PASSWORD", "MINIO_ROOT_PASSWORD",
                                             "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_JWT_SECRET", "QPVHUB_API_PASSWORD")}
    assert _check_secrets(compose, QPVHUB_DEPLOYMENT="production", **strong).returncode == 0
    for name in ("postgis", "airflow-db", "minio"):  # nothing starts before the check passed
        assert compose["services"][name]["depends_on"]["secrets-check"]["condition"] == \
            "service_completed_successfully"
    init = " ".join(compose["services"]["airflow-init"]["command"])
    assert "0o600" in init and "qpvhub migrate" in init  # the admin's password file is never world-readable
