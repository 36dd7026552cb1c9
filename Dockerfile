# syntax=docker/dockerfile:1
# The project image: the base image of the KFP pipeline's Python components and the KServe
# predictor (k8s/serving/servingruntime.yaml runs `interactavatar serve --host 0.0.0.0`).
#
#   docker build -t interactavatar/interactavatar:0.1.0 .                      # CUDA torch (GPU nodes)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#                -t interactavatar/interactavatar:0.1.0-cpu .                   # CPU only, ~4 GB smaller

# The Python the project is developed and tested with (3.11, see constraints.txt).
FROM python:3.11.7-slim-bookworm

# Empty: PyPI's torch wheel, which on linux/x86_64 is the CUDA build and brings its CUDA
# libraries as wheels (no CUDA base image needed). A PyTorch index URL selects another variant
# (.../whl/cpu, .../whl/cu128, ...); constraints.txt pins torch==X.Y.Z, which accepts the
# index's X.Y.Z+variant build.
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

# git: DVC checks out the data revision a pipeline run names.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid so that pod securityContexts (runAsNonRoot) can name it.
RUN useradd --create-home --uid 10001 --user-group interactavatar

WORKDIR /opt/interactavatar
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# ONE pip command resolves every dependency together, as on a developer machine (a separate
# install of any of them breaks others' pins, see PLATFORM-NOTES), with the same constraints.
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -c constraints.txt . \
    && pip check

USER 10001
WORKDIR /home/interactavatar
# Caches that libraries write at run time go to the user's home, which is writable.
ENV TORCH_EXTENSIONS_DIR=/home/interactavatar/.cache/torch_extensions

ENTRYPOINT ["interactavatar"]
CMD ["--help"]
