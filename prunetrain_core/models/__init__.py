"""Model registry: the CIFAR networks PruneTrain was published with, and torchvision's ImageNet ones."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .cifar import VGG_CONFIGS, CifarResNet, CifarVGG, init_like_prunetrain

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


def _init_torchvision(layers: list[nn.Module]) -> None:
    """torchvision's ResNet / VGG initialisation: conv Kaiming-normal (fan out, ReLU), BN 1 and 0, FC N(0, 0.01)
    for VGG (torchvision.models.vgg) and PyTorch's default for ResNet's FC (torchvision.models.resnet)."""
    vgg = sum(isinstance(m, nn.Linear) for m in layers) > 1  # VGG's classifier has three, ResNet one fc
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and vgg:
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _call_order(model: nn.Module) -> list[nn.Module]:
    """The model's layers in the order its forward calls them (the order their constructors ran in the
    registered models), then any layer it never calls; from the traced graph, so a rebuilt or pruned
    GraphModule, whose registration order differs, draws in the same order as the model it came from."""
    graph = model.graph if isinstance(model, torch.fx.GraphModule) else torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    called = list(dict.fromkeys(n.target for n in graph.nodes if n.op == "call_module"))
    rest = [name for name in modules if name and name not in called]
    return [modules[name] for name in called + rest]


def initialise(model: nn.Module, name: str) -> nn.Module:
    """Initialise ``model`` (any widths: a pruned or thinned one) as :func:`build_model` initialises ``name``.

    Every layer is reset in call order (the draws its constructor makes) and then given the family's rule
    in the same order, so under the same seed a network of the dense one's shapes gets exactly its weights,
    and one of other widths starts by the same rule: this is how an architecture is trained "from scratch".
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}: choose one of {', '.join(available_models())}")
    layers = _call_order(model)
    for m in layers:
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    if name.endswith("-imagenet"):
        _init_torchvision(layers)
    else:
        init_like_prunetrain(model, layers)
    return model


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
