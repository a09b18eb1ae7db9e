# The demo in a container: `docker build -t certified-unlearning . && docker run --rm certified-unlearning`
# Not built in this project's CI (no registry access for base images there); kept small and plain.
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends git make \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 app

WORKDIR /app
# Dependencies first (cached layer): the package metadata alone, with empty package folders.
# CPU wheels of the pinned torch keep the image small; drop the index for a CUDA build.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
RUN mkdir -p components/unlearning pipelines benchmarks \
 && touch components/__init__.py components/unlearning/__init__.py pipelines/__init__.py \
          benchmarks/__init__.py \
 && pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" . \
 && pip uninstall -y certified-unlearning && rm -rf components pipelines benchmarks build

# Then the source.
COPY params.yaml dvc.yaml ./
COPY components components
COPY pipelines pipelines
COPY benchmarks benchmarks
COPY examples examples
RUN pip install --no-cache-dir --no-deps -e .

# Mount points owned by the app user, so named volumes there (compose.yaml) start writable.
RUN mkdir -p /home/app/ws /home/app/keys && chown app:app /home/app/ws /home/app/keys
USER app
ENV DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 PREFECT_HOME=/home/app/.prefect
WORKDIR /home/app
# No secret baked in: pass -e UNLEARN_CERT_KEY=... ; without it the demo signs with a throw-away key.
CMD ["unlearn", "demo", "--workspace", "/home/app/demo", "--summary", "/home/app/demo-summary.json"]
