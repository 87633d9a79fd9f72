"""From an image to class probabilities: any image into the model's 28x28 input (`preprocess`), the loaded-model
handle every command shares (`model`), and one module per runtime that runs it (`torch_runtime`, `onnx_runtime`).
Imports neither Lightning nor Hydra, so predict and a server start fast."""
