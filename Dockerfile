# syntax=docker/dockerfile:1
# The project image: the base image of the KFP pipeline's Python components and the KServe
# predictor (k8s/serving/servingruntime.yaml runs `interactavatar serve --host 0.0.0.0`).
# It holds the package and its runtime dependencies only: no tests, dev tools or compilers.
#
#   docker build -t interactavatar/interactavatar:0.1.0 .                      # CUDA torch (GPU nodes)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#                -t interactavatar/interactavatar:0.1.0-cpu .                   # CPU only, ~4 GB smaller
#   make image                 # podman, on a debootstrapped Debian base, CPU torch (docker/build-image.sh)

# Any Debian bookworm (Python 3.11, as constraints.txt was resolved with): the default is the
# public Python image for clusters; `make image` passes a local debootstrapped minbase, since no
# registry is reachable on the machines this project is developed on.
ARG BASE_IMAGE=python:3.11.7-slim-bookworm

# Python, git (DVC checks out the data revision a pipeline run names), CA certificates (S3, MLflow
# over TLS) and the non-root user. One stage: copying a built venv out of a build stage cost
# minutes per build for the few MB that python3-venv weighs.
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PATH=/opt/venv/bin:$PATH
# The Python image brings its own python3 with venv; a plain Debian base gets Debian's (3.11 on
# bookworm) and python3-venv.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends ca-certificates git \
        $(command -v python3 >/dev/null || echo python3 python3-venv) \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
# A fixed uid so that pod securityContexts (runAsNonRoot) can name it.
RUN useradd --create-home --uid 10001 --user-group interactavatar

# Empty: PyPI's torch wheel, which on linux/x86_64 is the CUDA build and brings its CUDA
# libraries as wheels (no CUDA base image needed). A PyTorch index URL selects another variant
# (.../whl/cpu, .../whl/cu128, ...); constraints.txt pins torch==X.Y.Z, which accepts the
# index's X.Y.Z+variant build.
ARG TORCH_INDEX_URL=""
# pip reads these from the environment: a folder of wheels mounted into the build (the CPU torch
# wheel on disk) and a CA bundle for the index; both empty by default.
ARG PIP_FIND_LINKS=""
ARG PIP_CERT=""
WORKDIR /opt/interactavatar
# Dependencies first, in their own layer, so that a source change rebuilds in seconds. ONE pip
# command resolves every runtime dependency together with the project's constraints, as on a
# developer machine (a separate install of any of them breaks others' pins, see PLATFORM-NOTES).
COPY pyproject.toml constraints.txt ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -c constraints.txt -r requirements.txt
COPY README.md ./
COPY src ./src
# The package alone: its dependencies are all installed above, and `pip check` proves it.
RUN pip install --no-deps . && pip check

USER 10001
WORKDIR /home/interactavatar
# Caches that libraries write at run time go to the user's home, which is writable.
ENV TORCH_EXTENSIONS_DIR=/home/interactavatar/.cache/torch_extensions

ENTRYPOINT ["interactavatar"]
CMD ["--help"]
