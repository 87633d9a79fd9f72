# The service as a container image (docs/container.md). Two flavours from one file:
#   RUNTIME=onnx   the exported model in ONNX Runtime, no torch in the image (the small one)
#   RUNTIME=torch  the checkpoint in PyTorch (any run under outputs/, no export needed)
# Nothing is downloaded while building: the wheels come from build/wheelhouse/, which `make wheelhouse RUNTIME=...`
# fills on the host from requirements.lock (so the image holds the versions CI tested, and an air-gapped machine
# builds it too). `make image RUNTIME=onnx` does both steps.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# 1. the project's wheel, built from the checkout with the wheelhouse's setuptools
FROM ${BASE_IMAGE} AS build
LABEL org.mnist-lightning.stage=build
COPY build/wheelhouse/setuptools-*.whl /wheels/
COPY pyproject.toml README.md LICENSE /src/
COPY conf /src/conf
COPY hydra_plugins /src/hydra_plugins
COPY mnist_lightning /src/mnist_lightning
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --no-index --find-links /wheels --no-deps --wheel-dir /dist /src

# 2. a virtual environment: first every wheel of the wheelhouse (the dependencies: a layer that an edit of the
# code leaves cached), then the project's wheel without dependencies. pip compiles the bytecode as it installs.
# onnx: the wheelhouse holds what container/onnx-requirements.txt needs, so torch and training's libraries are
# not there; torch: the dependencies of the serve, postgres and mlflow extras, torch included.
FROM ${BASE_IMAGE} AS install
ARG RUNTIME=onnx
LABEL org.mnist-lightning.stage=install
COPY build/wheelhouse /wheels
RUN if [ "$(cat /wheels/RUNTIME)" != "$RUNTIME" ]; then \
        echo "build/wheelhouse holds the wheels of RUNTIME=$(cat /wheels/RUNTIME): make wheelhouse RUNTIME=$RUNTIME" >&2; \
        exit 1; \
    fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/*.whl
COPY --from=build /dist /dist
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /dist/mnist_lightning-*.whl

# 3. the image: the environment above on a clean base, run by a user without privileges
FROM ${BASE_IMAGE}
ARG RUNTIME=onnx
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home --shell /usr/sbin/nologin mnist \
    && install -d -o 10001 -g 10001 /app/outputs
COPY --from=install /opt/venv /opt/venv
COPY container/entrypoint.sh /usr/local/bin/mnist-entrypoint
# HOME=/tmp: a user given with --user, who has no home in the image, still has a writable one
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MLFLOW_DISABLE_TELEMETRY=true \
    MNIST_RUNTIME=${RUNTIME}
WORKDIR /app
# runs, exports, the prediction log and the service's own run folders: mount the project's outputs/ here
VOLUME ["/app/outputs"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["mnist-entrypoint"]
