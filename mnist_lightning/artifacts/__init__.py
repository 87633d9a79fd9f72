"""What the verbs write beside the checkpoints: an export folder (`export.py`: model.onnx, model.pt2, model.json,
verified against PyTorch) and an evaluation's reports and figures (`reports.py`)."""
