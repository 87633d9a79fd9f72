"""The REST service and its drawing page. `create_app` (`app.py`) assembles a FastAPI app around loaded models
(`mnist_lightning.inference.model.LoadedModel`): validated settings (`settings.py`), the shared state its routes
reach through dependencies (`state.py`), one router per theme (`routes_predict.py`, `routes_ab.py`,
`routes_service.py`), readable 422s (`validation.py`), A/B routing (`ab.py`), drift monitors (`drift.py`), a
body-size limit (`limits.py`), Prometheus metrics (`metrics.py`), request and response models (`schemas.py`) and
the page's files (`page/`). `python -m mnist_lightning.serve` runs it."""
