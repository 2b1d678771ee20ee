"""Training objectives, one registry (OBJECTIVES, keyed by `objective.name`; see ObjectiveConfig).

Each objective owns what the loop and the validation pass ask of it: the encoder's input (`views`),
its training loss, its validation loss, and their names (`loss_names`: history.csv's loss columns;
`loss_label`: what the loss curve calls them). Adding one is a subclass with `@register("name")`, plus its name in
config.ObjectiveName.

    reconstruct  the seed: MSE of the clean image rebuilt from itself
    denoise      MSE of the clean image rebuilt from a noisy view (views.noisy)
    augment      ... from an augmented view (views.augmented)
    masked       ... from a view with patches greyed out (views.masked)
    contrastive  SimCLR's NT-Xent on the projector's output of two augmented views, plus the
                 decoder's MSE on each view; with `neighbours` > 0, part of NT-Xent takes NNCLR's
                 positive (the batch's nearest other image) instead of the image's own other view

denoise/augment/masked with `invariance` > 0 rebuild two views and add the disagreement of their
embeddings (and with `redundancy`, their cross-correlation). The reconstructive objectives validate
on the clean images' MSE; contrastive on its own loss, on views drawn from a fixed seed.

Under torchrun (distributed.py) `clean` is this rank's share of the global batch (`part`); the terms
that compare images across the batch (NT-Xent, the invariance and redundancy terms) act on the
embeddings gathered from every rank, so they see the global batch as one process would.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from landmark_ae.config import enum_value
from landmark_ae.data.prepared import to_model_range
from landmark_ae.model.builder import ConvAutoencoder
from landmark_ae.train.distributed import Ranks, gather_rows
from landmark_ae.train.views import Part, augmented, masked, noisy

ONE = Ranks.single()
# history.csv's loss columns, in order (every objective logs a train and a validation loss).
LOSS_COLUMNS = ("train_loss", "val_loss")


class Objective:
    """The seed's objective (reconstruct) and the base of the others. `settings` is the run's
    ObjectiveConfig; for reconstruct it may be None (the seed's loop has no settings to read)."""

    name = "reconstruct"
    loss_names = LOSS_COLUMNS  # history.csv's columns for (train loss, validation loss)
    loss_label = "MSE"  # the loss curve's title: "<model>: MSE loss"

    def views(self, clean: torch.Tensor, settings: Any, generator: torch.Generator,
              part: Part | None = None) -> torch.Tensor:
        """The encoder's uint8 input for a clean uint8 batch (a new tensor or `clean` itself)."""
        return clean

    def train_loss(self, model: ConvAutoencoder, clean: torch.Tensor, settings: Any, generator: torch.Generator,
                   part: Part | None = None, ranks: Ranks = ONE) -> torch.Tensor:
        target = to_model_range(clean)
        return F.mse_loss(model(target), target)

    def val_loss_sum(self, model: ConvAutoencoder, clean: torch.Tensor, settings: Any, generator: torch.Generator,
                     part: Part | None = None, ranks: Ranks = ONE) -> torch.Tensor:
        """The batch's validation loss summed over its images (float64; the pass divides by the count)."""
        return reconstruction_sum(model, to_model_range(clean))

    def unused_parameters(self, model: ConvAutoencoder, settings: Any) -> bool:
        """Whether some parameters get no gradient (DDP must then look for them every step)."""
        return model.projector is not None  # only the contrastive objective trains the projector


OBJECTIVES: dict[str, Objective] = {}


def register(name: str) -> Callable[[type[Objective]], type[Objective]]:
    def add(cls: type[Objective]) -> type[Objective]:
        cls.name = name
        OBJECTIVES[name] = cls()
        return cls

    return add


def objective_for(settings: Any) -> Objective:
    """The registered objective an ObjectiveConfig names; None (the seed's loop) is reconstruct."""
    name = "reconstruct" if settings is None else enum_value(settings.name)
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name]


register("reconstruct")(Objective)


class RebuildClean(Objective):
    """The decoder rebuilds the clean image from a corrupted view (subclasses say which)."""

    def train_loss(self, model: ConvAutoencoder, clean: torch.Tensor, settings: Any, generator: torch.Generator,
                   part: Part | None = None, ranks: Ranks = ONE) -> torch.Tensor:
        target = to_model_range(clean)
        if not settings.invariance:
            return F.mse_loss(model(to_model_range(self.views(clean, settings, generator, part))), target)
        views = torch.cat([self.views(clean, settings, generator, part), self.views(clean, settings, generator, part)])
        latent = model.encoder(to_model_range(views))
        loss = F.mse_loss(model.decoder(latent), torch.cat([target, target]))
        a, b = (gather_rows(half, ranks) for half in latent.flatten(1).chunk(2))
        loss = loss + settings.invariance * view_disagreement(a, b)
        if settings.redundancy:
            loss = loss + settings.redundancy * cross_redundancy(a, b)
        return loss


@register("denoise")
class Denoise(RebuildClean):
    def views(self, clean, settings, generator, part=None):
        return noisy(clean, generator, settings.noise_std, part)


@register("augment")
class Augment(RebuildClean):
    def views(self, clean, settings, generator, part=None):
        return augmented_view(clean, settings, generator, part)


@register("masked")
class Masked(RebuildClean):
    def views(self, clean, settings, generator, part=None):
        return masked(clean, generator, settings.mask_ratio, settings.mask_patch, part)


@register("contrastive")
class Contrastive(Augment):
    """Validated on its own loss: views drawn from the validation pass's fixed-seed generator, so
    that epochs are compared on the same views."""

    loss_label = "NT-Xent + MSE"

    def train_loss(self, model, clean, settings, generator, part=None, ranks=ONE):
        return contrastive_loss(model, clean, settings, generator, part, ranks)

    def val_loss_sum(self, model, clean, settings, generator, part=None, ranks=ONE):
        return contrastive_loss(model, clean, settings, generator, part, ranks).double() * len(clean)

    def unused_parameters(self, model, settings):
        return not settings.reconstruction  # the decoder, when its MSE has no weight


def objective_loss(model: ConvAutoencoder, clean: torch.Tensor, objective: Any, generator: torch.Generator,
                   part: Part | None = None, ranks: Ranks = ONE) -> torch.Tensor:
    """The training loss of one clean uint8 batch under `objective` (an ObjectiveConfig, or None
    for the seed's reconstruction)."""
    return objective_for(objective).train_loss(model, clean, objective, generator, part, ranks)


def augmented_view(clean: torch.Tensor, settings: Any, generator: torch.Generator, part: Part | None = None,
                   size: int | None = None) -> torch.Tensor:
    """augment's and contrastive's view: a random resized crop, flip, colour jitter and greyscale,
    resampled to `size` (None: the clean batch's side)."""
    return augmented(clean, generator, settings.crop_scale, settings.flip, settings.jitter,
                     greyscale=settings.greyscale, part=part, size=size)


def setting(settings: Any, name: str, default: Any) -> Any:
    """An objective key that runs saved before it existed lack (their last.pt resumes with the default)."""
    value = settings.get(name, default) if hasattr(settings, "get") else getattr(settings, name, default)
    return default if value is None else value


def local_views(clean: torch.Tensor, settings: Any, generator: torch.Generator, part: Part | None) -> torch.Tensor:
    """Multi-crop's small views: local_crops per image, each local_size px and covering
    [local_crop_scale, crop_scale] of it (view-major: all images' first local view, then the second...)."""
    count, size = int(setting(settings, "local_crops", 0)), int(setting(settings, "local_size", 24))
    low = float(setting(settings, "local_crop_scale", 0.05))
    return torch.cat([augmented(clean, generator, low, settings.flip, settings.jitter, greyscale=settings.greyscale,
                                part=part, size=size, max_scale=max(settings.crop_scale, low)) for _ in range(count)])


def reconstruction_sum(model: ConvAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """Per-image MSE of the model rebuilding x (in model range), summed over the batch, in float64."""
    return F.mse_loss(model(x).float(), x, reduction="sum").double() / x[0].numel()


def contrastive_loss(model: ConvAutoencoder, clean: torch.Tensor, objective: Any, generator: torch.Generator,
                     part: Part | None = None, ranks: Ranks = ONE) -> torch.Tensor:
    """Two augmented views of every image; NT-Xent on the projector's output of their embeddings,
    plus `reconstruction` times the MSE of the decoder rebuilding each view from its own embedding.

    Rebuilding the view (not the clean image) keeps the decoder's task possible: a crop cannot
    tell what lay outside it. The projector is optional (without one, NT-Xent acts on the
    embedding itself)."""
    size = getattr(model, "input_size", None) if setting(objective, "source_size", None) else None
    views = to_model_range(torch.cat([augmented_view(clean, objective, generator, part, size),
                                      augmented_view(clean, objective, generator, part, size)]))
    latent = model.encoder(views)
    z = _projected(model, latent, 2, ranks)
    loss = nt_xent(z, objective.temperature)
    if setting(objective, "neighbours", 0.0):
        weight = float(objective.neighbours)
        loss = (1 - weight) * loss + weight * neighbour_nt_xent(z, objective.temperature)
    if setting(objective, "local_crops", 0):
        loss = multi_crop_loss(z, _projected(model, model.encoder(to_model_range(
            local_views(clean, objective, generator, part))), objective.local_crops, ranks), objective.temperature)
    if objective.reconstruction:
        loss = loss + objective.reconstruction * F.mse_loss(model.decoder(latent), views)
    return loss


def _projected(model: ConvAutoencoder, latent: torch.Tensor, views: int, ranks: Ranks) -> torch.Tensor:
    """The projector's output of `views` stacked views of the batch. Every rank computes NT-Xent of
    the whole global batch (each view's rows in the global order); DDP's gradient average then
    equals one process's gradient."""
    z = latent.flatten(1)
    if model.projector is not None:
        z = model.projector(z)
    if ranks.distributed:
        z = torch.cat([gather_rows(view, ranks) for view in z.chunk(views)])
    return z


def multi_crop_loss(global_z: torch.Tensor, local_z: torch.Tensor, temperature: float) -> torch.Tensor:
    """The two global views' NT-Xent averaged with each local view's, taken against either global
    view (SwAV's multi-crop with NT-Xent): every local view must pick its image's global view out
    of the batch. global_z holds 2n rows (both global views), local_z m * n (m local views)."""
    first, second = global_z.chunk(2)
    losses = [nt_xent(global_z, temperature)]
    for local in local_z.chunk(len(local_z) // len(first)):
        losses += [nt_xent(torch.cat([local, first]), temperature), nt_xent(torch.cat([local, second]), temperature)]
    return (losses[0] + sum(losses[1:]) / 2) / (1 + (len(losses) - 1) / 2)


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy. z holds 2n rows: row i and row i + n are two
    views of one image. Each row must pick its partner out of the other 2n - 1 rows by cosine
    similarity / temperature; the loss is the mean cross entropy of that choice."""
    if len(z) % 2 or len(z) < 2:
        raise ValueError(f"nt_xent needs an even, positive number of rows, got {len(z)}")
    n = len(z) // 2
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a row is never its own partner
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, partner)


def neighbour_nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """NNCLR's loss with the batch as its support set: z holds 2n rows (row i and i + n are two
    views of image i). Each view's positive is the other view's nearest other image in the batch
    (cosine, no gradient through the choice nor through that neighbour), picked out of the other
    view's n rows: view a of the neighbour of i must be closest to view b of i, and vice versa.
    Two views of different images of one place thus pull together, which augmentations cannot do."""
    if len(z) % 2 or len(z) < 4:
        raise ValueError(f"neighbour_nt_xent needs an even number of rows, at least 4, got {len(z)}")
    first, second = F.normalize(z, dim=1).chunk(2)
    target = torch.arange(len(first), device=z.device)
    loss = z.new_zeros(())
    for anchor, other in ((first, second), (second, first)):
        support = anchor.detach()
        similarity = support @ support.T
        similarity.fill_diagonal_(float("-inf"))  # an image is not its own neighbour
        neighbour = support[similarity.argmax(1)]
        loss = loss + F.cross_entropy(neighbour @ other.T / temperature, target)
    return loss / 2


def _standardise(a: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return (a - a.mean(0)) / (a.std(0, correction=0) + eps)


def view_disagreement(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of 1 - corr(a_d, b_d) across the batch: 0 when two views embed alike.

    Standardising each dimension first means agreement cannot come from shrinking the embedding."""
    return 1 - (_standardise(a) * _standardise(b)).mean(0).mean()


def cross_redundancy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal cross-view correlation (Barlow Twins' redundancy term): pushes the
    embedding's dimensions to carry different information instead of copies of one invariant."""
    c = _standardise(a).T @ _standardise(b) / len(a)
    off = c - torch.diag_embed(torch.diagonal(c))
    return off.pow(2).sum() / max(c.shape[0] * (c.shape[0] - 1), 1)
