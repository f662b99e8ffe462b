"""The CIFAR networks PruneTrain was published with, as ordinary nn.Modules.

Topologies: ResNet-20/32/56/110 with basic
blocks and 1×1 projection shortcuts at stage transitions; the CIFAR "ResNet-50"
with 3 stages × 8 bottleneck blocks (widths 16/64, 32/128, 64/256); VGG-8/11/13/16
with BatchNorm, max-pooled to 1×1, then one FC layer.  Nothing here tells the
engine how channels are coupled: that is found from the traced graph.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def init_like_prunetrain(model: nn.Module, order: list[nn.Module] | None = None) -> nn.Module:
    """PruneTrain's initialisation: conv N(0, sqrt(2/(k²·C_out))), BN γ=1 β=0, FC PyTorch default.

    It sets G₀, and so λ for a given penalty ratio.  ``order``: the layers in the order to draw them
    (default: ``model.modules()``).
    """
    for m in order if order is not None else model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, inner: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, inner, 1)
        self.conv2, self.bn2 = _conv_bn(inner, inner, 3, stride)
        self.conv3, self.bn3 = _conv_bn(inner, cout, 1)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """3-stage CIFAR ResNet; ``blocks`` per stage, basic or bottleneck."""

    def __init__(self, blocks: int, num_classes: int, bottleneck: bool = False):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 16, 3)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        cin = 16
        for s, width in enumerate((16, 32, 64)):
            layers = []
            for b in range(blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                if bottleneck:
                    layers.append(Bottleneck(cin, width, width * 4, stride))
                    cin = width * 4
                else:
                    layers.append(BasicBlock(cin, width, stride))
                    cin = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_like_prunetrain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


VGG_CONFIGS: dict[str, list] = {
    "vgg8": [64, "M", 128, "M", 256, "M", 512, "M", 512, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class CifarVGG(nn.Module):
    """VGG with BatchNorm for 32×32 inputs: five max-pools to 1×1, then one FC."""

    def __init__(self, config: list, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [*_conv_bn(cin, item, 3), nn.ReLU(inplace=True)]
                cin = item
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        init_like_prunetrain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))
