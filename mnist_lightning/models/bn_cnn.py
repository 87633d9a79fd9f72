"""A small CNN with batch normalisation: the network of `experiment=fast`.

Three blocks of conv 3x3 (padded) -> batch norm -> ReLU -> max-pool 2 shrink 28x28 to 3x3, then one linear
layer. With the default widths (16, 32, 64) a forward pass costs about 1.9 M multiply-adds, a sixth of the
seed CNN's 12 M, and batch normalisation lets it train at a high learning rate: two epochs reach 99% on every
seed tried (BENCHMARKS.md, "Time to 99%"). A plain nn.Module, free of Lightning and Hydra.
"""

from torch import nn


class BatchNormCNN(nn.Module):
    """[conv 3x3 -> BN -> ReLU -> max-pool 2] x 3 -> fc (9 * channels[-1] -> 10)."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), num_classes: int = 10):
        super().__init__()
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels={list(channels)}: give three positive widths, e.g. [16, 32, 64]")
        layers: list[nn.Module] = []
        width = 1
        for out in channels:  # 28 -> 14 -> 7 -> 3
            layers += [
                nn.Conv2d(width, out, 3, padding=1, bias=False),  # the batch norm's shift is the bias
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            width = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(width * 3 * 3, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))
