"""From an image or a test split to class probabilities: preprocessing any image into the model's 28x28 input
(`preprocess`), running a network on a device (`runtime`), and the reports and figures of an evaluation
(`reports`). Imports neither Lightning nor Hydra, so predict and a server start fast."""
