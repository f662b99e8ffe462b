"""Model registry: the CIFAR networks PruneTrain was published with, and torchvision's ImageNet ones."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .cifar import VGG_CONFIGS, CifarResNet, CifarVGG

_CIFAR_RESNET_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet56": 9, "resnet110": 18}


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


MODELS: dict[str, Callable[[int], nn.Module]] = {
    **{name: (lambda n, b=blocks: CifarResNet(b, n)) for name, blocks in _CIFAR_RESNET_DEPTHS.items()},
    "resnet50": lambda n: CifarResNet(8, n, bottleneck=True),
    **{name: (lambda n, c=cfg: CifarVGG(c, n)) for name, cfg in VGG_CONFIGS.items()},
    "resnet50-imagenet": _torchvision("resnet50"),
    "vgg16-imagenet": _torchvision("vgg16_bn"),
}

#: input resolution each model is built for (CIFAR 32, ImageNet 224)
INPUT_SIZE = {name: (224 if name.endswith("-imagenet") else 32) for name in MODELS}


def available_models() -> list[str]:
    return sorted(MODELS)


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build a registered model by name, initialised as in PruneTrain (see models.cifar)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}: choose one of {', '.join(available_models())}") from None
    return factory(num_classes)


def example_input(name: str, batch: int = 2) -> torch.Tensor:
    size = INPUT_SIZE.get(name, 32)
    return torch.randn(batch, 3, size, size)
