"""Autoencoders built from the layer lists in conf/model/*.yaml by one generic builder.

A model config is a name, an input size and two lists of layers (`{type: Conv2d, ...kwargs}`);
the encoder's output, flattened, is the image embedding. An optional third list, `projector`, is a
head on the embedding that only the contrastive objective trains (embeddings are taken before it).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from landmark_ae.errors import UserError


class ResBlock(nn.Module):
    """A pre-activation-free basic residual block: x + BN(conv(ReLU(BN(conv(x))))), then ReLU.

    Keeps channels and spatial size (3x3 convs, padding 1), so it slots in anywhere in a layer list:
    `{type: ResBlock, channels: 64}`. `bottleneck` < channels narrows the inner conv (cheaper).
    """

    def __init__(self, channels: int, bottleneck: int | None = None, kernel_size: int = 3):
        super().__init__()
        inner = int(bottleneck or channels)
        pad = kernel_size // 2
        self.body = nn.Sequential(
            nn.Conv2d(channels, inner, kernel_size, padding=pad, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, channels, kernel_size, padding=pad, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


# Layer types a config may name: torch.nn modules by their class name, plus our own blocks.
LAYER_TYPES: dict[str, type[nn.Module]] = {
    **{
        name: getattr(nn, name)
        for name in [
            "Conv2d", "ConvTranspose2d", "BatchNorm2d", "BatchNorm1d", "ReLU", "LeakyReLU", "GELU",
            "SiLU", "Tanh", "Sigmoid", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Upsample",
            "Flatten", "Unflatten", "Linear", "Dropout", "Identity",
        ]
    },
    "ResBlock": ResBlock,
}


class ConvAutoencoder(nn.Module):
    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential, projector: nn.Sequential | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        # Registered only when configured, so the seed models' state dicts keep their exact keys.
        if projector is not None and len(projector):
            self.projector = projector
        else:
            self.projector = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck, flattened: one row per image."""
        return self.encoder(x).flatten(1)


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return cfg


def build_layers(specs: list[Mapping[str, Any]], model_name: str, part: str) -> nn.Sequential:
    layers = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        kind = spec.pop("type", None)
        if kind not in LAYER_TYPES:
            raise UserError(
                f"model {model_name}: {part} layer {i} has unknown type {kind!r} "
                f"(known: {', '.join(sorted(LAYER_TYPES))})"
            )
        try:
            layers.append(LAYER_TYPES[kind](**spec))
        except (TypeError, ValueError) as exc:  # an unknown or out-of-range argument of the layer
            raise UserError(f"model {model_name}: {part} layer {i} ({kind}): {str(exc).splitlines()[0]}") from None
    return nn.Sequential(*layers)


def build_model(model_cfg: Mapping[str, Any], check: bool = True) -> ConvAutoencoder:
    """Build the autoencoder a model config describes; by default dry-run a batch to check shapes."""
    cfg = _plain(model_cfg)
    name = cfg.get("name", "?")
    model = ConvAutoencoder(
        build_layers(cfg["encoder"], name, "encoder"), build_layers(cfg["decoder"], name, "decoder"),
        build_layers(cfg.get("projector") or [], name, "projector"),
    )
    # The side the model trains at: contrastive views are resampled to it (objectives.py).
    model.input_size = int(cfg["input_size"])
    if check:
        check_round_trip(model, name, model.input_size)
    return model


def check_round_trip(model: ConvAutoencoder, name: str, input_size: int) -> tuple[int, ...]:
    """Run two blank images through the model; the reconstruction must match the input's shape.

    Returns the latent shape (C, H, W) or (D,).
    """
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(2, 3, input_size, input_size)
        with torch.no_grad():
            latent = model.encoder(x)
            out = model.decoder(latent)
            if model.projector is not None:
                model.projector(latent.flatten(1))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"model {name}: layers do not fit together for a {input_size}x{input_size} input: {first}") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != tuple(x.shape):
        shape = lambda t: "x".join(map(str, t.shape[1:]))  # noqa: E731
        raise UserError(
            f"model {name}: reconstruction {shape(out)} does not match input {shape(x)}; "
            "fix the decoder layers or the model's input_size"
        )
    return tuple(latent.shape[1:])
