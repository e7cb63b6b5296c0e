"""ResNet-50 with ELU in place of ReLU, defined here (no download), for the model benchmark.

The standard torchvision layout (bottleneck blocks [3, 4, 6, 3], widths 64-512 x 4 expansion,
BatchNorm after every conv), with ``width`` scaling every channel count and ``blocks`` the
number of bottlenecks per stage, so tests can build a tiny one. Each conv -> BatchNorm -> ELU
is what ``elutriton.fuse`` folds in eval mode; the ELU after each residual sum has no conv
producer and stays as it is.
"""
from torch import nn

EXPANSION = 4


class Bottleneck(nn.Module):
    def __init__(self, in_channels, width, stride):
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ELU()
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ELU()
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))
        self.act_out = nn.ELU()

    def forward(self, x):
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act_out(y + shortcut)


class ResNet50ELU(nn.Module):
    def __init__(self, width: float = 1.0, blocks=(3, 4, 6, 3), num_classes: int = 1000):
        super().__init__()
        stem = max(4, int(64 * width))
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(stem), nn.ELU(),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        layers, in_channels = [], stem
        for stage, count in enumerate(blocks):
            stage_width = max(4, int(64 * 2 ** stage * width))
            for i in range(count):
                layers.append(Bottleneck(in_channels, stage_width,
                                         2 if i == 0 and stage > 0 else 1))
                in_channels = stage_width * EXPANSION
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))
