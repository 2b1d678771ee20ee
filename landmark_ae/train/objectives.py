"""Training objectives: the loss of one batch for each `objective.name` (see ObjectiveConfig).

reconstruct/denoise/augment/masked: MSE between the clean batch and the reconstruction of its
corrupted view (views.py); `invariance` adds the disagreement of two views' embeddings; contrastive:
SimCLR's NT-Xent on the projector's output of two views, plus the decoder's MSE on each view.

Under torchrun (distributed.py) `clean` is this rank's share of the global batch (`part`); the terms
that compare images across the batch (NT-Xent, the invariance and redundancy terms) act on the
embeddings gathered from every rank, so they see the global batch as one process would.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from landmark_ae.data.prepared import to_model_range
from landmark_ae.model.builder import ConvAutoencoder
from landmark_ae.train.distributed import Ranks, gather_rows
from landmark_ae.train.views import Part, corrupt

ONE = Ranks.single()


def objective_loss(model: ConvAutoencoder, clean: torch.Tensor, objective: Any, generator: torch.Generator,
                   part: Part | None = None, ranks: Ranks = ONE) -> torch.Tensor:
    """MSE between the clean batch and the reconstruction of its corrupted view (see augment.py);
    with `invariance` > 0, of two views, plus the weighted disagreement of their embeddings.
    `contrastive`: see contrastive_loss."""
    target = to_model_range(clean)
    if objective is None:
        return F.mse_loss(model(target), target)
    if objective.name == "contrastive":
        return contrastive_loss(model, clean, objective, generator, part, ranks)
    if not objective.invariance:
        return F.mse_loss(model(to_model_range(corrupt(clean, objective, generator, part))), target)
    views = torch.cat([corrupt(clean, objective, generator, part), corrupt(clean, objective, generator, part)])
    latent = model.encoder(to_model_range(views))
    loss = F.mse_loss(model.decoder(latent), torch.cat([target, target]))
    a, b = (gather_rows(half, ranks) for half in latent.flatten(1).chunk(2))
    loss = loss + objective.invariance * view_disagreement(a, b)
    if objective.redundancy:
        loss = loss + objective.redundancy * cross_redundancy(a, b)
    return loss


def contrastive_loss(model: ConvAutoencoder, clean: torch.Tensor, objective: Any, generator: torch.Generator,
                     part: Part | None = None, ranks: Ranks = ONE) -> torch.Tensor:
    """Two augmented views of every image; NT-Xent on the projector's output of their embeddings,
    plus `reconstruction` times the MSE of the decoder rebuilding each view from its own embedding.

    Rebuilding the view (not the clean image) keeps the decoder's task possible: a crop cannot
    tell what lay outside it. The projector is optional (without one, NT-Xent acts on the
    embedding itself)."""
    views = to_model_range(torch.cat([corrupt(clean, objective, generator, part),
                                      corrupt(clean, objective, generator, part)]))
    latent = model.encoder(views)
    z = latent.flatten(1)
    if model.projector is not None:
        z = model.projector(z)
    # Every rank computes NT-Xent of the whole global batch (first views, then second views, each in
    # the global order); DDP's gradient average then equals one process's gradient.
    if ranks.distributed:
        z = torch.cat([gather_rows(half, ranks) for half in z.chunk(2)])
    loss = nt_xent(z, objective.temperature)
    if objective.reconstruction:
        loss = loss + objective.reconstruction * F.mse_loss(model.decoder(latent), views)
    return loss


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
