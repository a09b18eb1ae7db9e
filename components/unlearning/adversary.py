"""An adversarial linear probe for class unlearning (pure torch).

Moving the forgotten class's features towards a target keeps them a coherent cluster: a linear
probe re-fitted on the unlearned features still finds the class (measured on CIFAR-10 / ResNet-20:
features moved 56 % of their norm, probe 91 % vs the oracle's 80 %). Forgetting in the features
means the class is no longer linearly separable from the retained ones. So RFA can train, in the
loop, a linear probe on the student's pooled features (detached: the probe only watches) and add
a penalty that grows while that probe still recognises Df as its true class. The adapter must then
move Df where the current probe sees another class; the probe adapts; and so on, the usual
adversarial game, kept small: the probe takes a few full-batch steps per RFA step on a bank of
the features the student produced lately (64-dimensional: cheap next to the network's pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from components.settings import ScenarioSettings
from components.unlearning.targets import TeacherView


class ForgetProbe(nn.Module):
    """Linear probe on standardised pooled features (B, C) -> class logits (B, K).

    The standardisation is fixed from the teacher's features (what the evaluation probe does with
    its StandardScaler) so the probe's learning rate means the same on every model.
    """

    def __init__(self, reference: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", reference.mean(0))
        self.register_buffer("std", reference.std(0).clamp_min(1e-4))
        self.linear = nn.Linear(reference.shape[1], num_classes)

    def forward(self, feats: torch.Tensor, watch_only: bool = False) -> torch.Tensor:
        z = (feats - self.mean) / self.std
        if watch_only:  # gradients reach the features, never the probe's weights
            return F.linear(z, self.linear.weight.detach(), self.linear.bias.detach())
        return self.linear(z)


class FeatureBank:
    """Ring buffer of the last `size` detached (feature, label) pairs the student produced.

    One RFA batch is too small and too recent for a probe that must stand for a probe re-fitted on
    all the unlearned features (a lagging probe is easy to fool and the evaluation's is not).
    """

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor, size: int) -> None:
        self.size = size
        self.feats, self.labels = feats[-size:].detach().clone(), labels[-size:].clone()

    def add(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        self.feats = torch.cat([self.feats, feats.detach()])[-self.size :]
        self.labels = torch.cat([self.labels, labels])[-self.size :]


def fit_probe(
    probe: ForgetProbe,
    opt: torch.optim.Optimizer,
    feats: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 1,
) -> float:
    """`steps` full-batch updates of the probe on detached features; returns the last loss."""
    loss = torch.zeros(())
    for _ in range(steps):
        loss = F.cross_entropy(probe(feats.detach()), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.item())


def recognition_penalty(
    probe: ForgetProbe, feats: torch.Tensor, forget_classes: tuple[int, ...]
) -> torch.Tensor:
    """Mean of -log(1 - p_probe(forgotten classes | feature)) over Df features (B, C).

    Zero when the probe gives the forgotten classes no mass; unbounded as it grows sure of them,
    so confidently recognised samples are pushed hardest.
    """
    p = F.softmax(probe(feats, watch_only=True), dim=1)[:, list(forget_classes)].sum(1)  # (B,)
    return -torch.log1p(-p.clamp(max=1 - 1e-6)).mean()


@dataclass
class Adversary:
    """The in-loop probe, its optimiser and the feature bank it is fitted on."""

    probe: ForgetProbe
    opt: torch.optim.Optimizer
    bank: FeatureBank

    def penalty(
        self,
        feats: torch.Tensor,
        labels: torch.Tensor,
        n_retain: int,
        forget_classes: tuple[int, ...],
        steps: int,
    ) -> tuple[float, torch.Tensor]:
        """Fit on the batch's pooled features (B, C) [retain; forget], then the forget part's
        recognition penalty. Returns (the probe's last fit loss, the penalty)."""
        self.bank.add(feats, labels)
        fit = fit_probe(self.probe, self.opt, self.bank.feats, self.bank.labels, steps=steps)
        return fit, recognition_penalty(self.probe, feats[n_retain:], forget_classes)


def warm_adversary(
    view: TeacherView, tap: str, device: torch.device, sc: ScenarioSettings, warm_steps: int = 200
) -> Adversary:
    """The adversarial probe, first fitted on the teacher's features of the retain subsample plus
    as many Df samples as one retained class has (so the forgotten class is not over-weighted);
    its bank starts from those features and fills with the student's as RFA runs."""
    k = view.retain_logits.shape[1]
    per_class = max(1, len(view.retain_labels) // max(1, k - len(view.forget_classes)))
    feats = torch.cat([view.retain_pooled[tap], view.forget_pooled[tap][:per_class]]).to(device)
    labels = torch.cat([view.retain_labels, view.forget_labels[:per_class]]).to(device)
    probe = ForgetProbe(feats, k).to(device)
    opt = torch.optim.Adam(probe.parameters(), lr=sc.probe_lr)
    fit_probe(probe, opt, feats, labels, steps=warm_steps)
    shuffle = torch.randperm(len(labels), device=device)  # the bank drops its oldest entries first
    return Adversary(probe, opt, FeatureBank(feats[shuffle], labels[shuffle], sc.probe_bank))
