# syntax=docker/dockerfile:1
# The MLflow tracking server of k8s/mlflow/: the official MLflow image has neither a Postgres
# driver nor boto3 (for artifacts on MinIO). mlflow and boto3 come from the project's
# constraints.txt, so the server runs the same mlflow version as the clients.
#
#   docker build -f docker/mlflow-server.Dockerfile -t interactavatar/mlflow-server:3.17.2 .
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

RUN useradd --create-home --uid 10001 --user-group mlflow

COPY constraints.txt /tmp/constraints.txt
# psycopg2-binary is pinned here: it is the server's alone, not the project's.
RUN pip install -c /tmp/constraints.txt mlflow boto3 psycopg2-binary==2.9.13 \
    && pip check \
    && rm /tmp/constraints.txt

USER 10001
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--help"]
