"""The seed project's CNN: a plain nn.Module, free of Lightning and Hydra, copyable on its own."""

from torch import nn


class SeedCNN(nn.Module):
    """conv 3x3 (1->32) -> conv 3x3 (32->64) -> max-pool 2 -> dropout -> fc (9216->128) -> dropout -> fc (128->10)."""

    def __init__(
        self,
        conv1_channels: int = 32,
        conv2_channels: int = 64,
        hidden: int = 128,
        dropout1: float = 0.25,
        dropout2: float = 0.5,
        num_classes: int = 10,
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, conv1_channels, 3),
            nn.ReLU(),
            nn.Conv2d(conv1_channels, conv2_channels, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(dropout1),
        )
        # 28x28 -> 26x26 -> 24x24 -> pooled 12x12
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(conv2_channels * 12 * 12, hidden),
            nn.ReLU(),
            nn.Dropout(dropout2),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
