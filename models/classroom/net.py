"""The classroom CNN: the slides' ``cnn2`` pattern (conv-BN-ReLU blocks, max-pooling, dropout), ending in global
average pooling and ONE linear layer so that CAM is defined. About 0.17 M parameters; every ReLU is its own
non-in-place module so module hooks (guided backprop, activation maps) see each use separately.
"""
from __future__ import annotations

from torch import nn

WIDTHS = (16, 24, 48, 96)


def _cbr(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=False)]


class ClassroomNet(nn.Module):
    """64×64 RGB → logits. ``features`` ends in the last conv block's ReLU (8×8 map, the CAM layer), then
    ``dropout`` (identity in eval) → ``pool`` → ``flatten`` → ``fc``: global average pooling straight into one
    linear layer.

    block1 64²: conv-BN-ReLU, maxpool → block2 32²: 2×conv-BN-ReLU, maxpool → block3 16²: 2×conv-BN-ReLU,
    maxpool → block4 8²: 2×conv-BN-ReLU. Receptive field of a final unit: 66 px (the whole image).
    """

    def __init__(self, num_classes: int = 6, widths: tuple[int, int, int, int] = WIDTHS,
                 dropout: float = 0.3) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.features = nn.Sequential(
            *_cbr(3, w1), nn.MaxPool2d(2),
            *_cbr(w1, w2), *_cbr(w2, w2), nn.MaxPool2d(2),
            *_cbr(w2, w3), *_cbr(w3, w3), nn.MaxPool2d(2),
            *_cbr(w3, w4), *_cbr(w4, w4),
        )
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w4, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.dropout(self.features(x)))))
