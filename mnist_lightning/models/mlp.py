"""A multilayer perceptron on the flattened 28x28 image: the simplest network worth comparing against."""

from torch import nn


class MLP(nn.Module):
    def __init__(self, hidden: tuple[int, ...] = (512, 256), dropout: float = 0.2, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
