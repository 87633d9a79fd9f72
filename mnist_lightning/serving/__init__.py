"""The REST service and its drawing page: a FastAPI app built by `create_app` (`app.py`) around a loaded model
(`model.py`), with request and response models (`schemas.py`), a body-size limit (`limits.py`), Prometheus
metrics (`metrics.py`) and the page's static files (`page/`). `python -m mnist_lightning.serve` runs it."""
