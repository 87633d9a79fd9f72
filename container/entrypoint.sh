#!/bin/sh
# The image's command: the service on every interface of the container, port 8000, with the runtime the image
# was built for. MODEL_REF (best, latest, registry:NAME@ALIAS, registry:NAME/VERSION) picks the model under the
# mounted /app/outputs; arguments are more Hydra overrides (ckpt_path=..., workers=2, ...). exec: the service is
# PID 1, so `docker stop`'s SIGTERM reaches uvicorn, which finishes the requests under way and exits.
set -eu
if [ -n "${MODEL_REF:-}" ]; then
  set -- "model_ref=$MODEL_REF" "$@"
fi
exec mnist-serve host=0.0.0.0 port=8000 "runtime=$MNIST_RUNTIME" "$@"
