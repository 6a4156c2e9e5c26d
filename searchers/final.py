"""Final training of a delivered network: its architecture frozen, its weights trained on for more
epochs, the way NAS papers train the network a search found before they report its accuracy
(Single-Path NAS trains its ImageNet networks after the 8-epoch search; Sec. VII-A trains every
network it compares, random search's samples included, for a few proxy epochs).

Here the weights start from the search's (the child shares them exactly, spaces/), not from scratch:
a short final training then adds to what the search learned. The schedule is random search's per
candidate (Adam, cosine decay over these epochs, crop/flip augmentation; training.train_one_epoch),
so that a study's total epochs (its trials plus this) compare one to one with random search by
rejection's (candidates x epochs).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import torch

from .base import RunSettings
from .cost import exact_cost
from .data import Task, accuracy_of
from .errors import UsageError
from .result import EpochMetrics, SearchResult, load_model, pack_bits
from .training import train_one_epoch

LR = 3e-3   # random search's candidate lr (RandomSearchParams.lr): the same recipe as the baseline


def train_delivered(model_path: str | os.PathLike, task: Task, settings: RunSettings, *, lr: float = LR,
                    on_epoch: Callable[[EpochMetrics], None] | None = None) -> SearchResult:
    """Train the network saved in `model_path` (a result's model.pt) for settings.epochs more epochs
    and score it as a search's result is scored (validation correctness per image, test accuracy,
    exact cost). Seeded by settings.seed: the same call gives the same network."""
    if not lr > 0:
        raise UsageError(f"final training lr must be > 0, got {lr}")
    arch, model = load_model(model_path)
    device = torch.device(settings.device)
    torch.manual_seed(settings.seed)
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    task.to(device)
    # channels_last: ~2x faster depthwise convolutions on CPU (oneDNN), as the searchers train
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    cost = exact_cost(arch, task, settings)
    history, wall = [], 0.0
    for epoch in range(settings.epochs):
        t0 = time.perf_counter()
        loss = train_one_epoch(model, opt, task, batch_size=settings.batch_size, generator=generator, lr=lr,
                               epoch=epoch, epochs=settings.epochs, device=device)
        wall += time.perf_counter() - t0
        m = EpochMetrics(epoch=epoch + 1, wall_s=round(wall, 3), loss=loss, ce=loss, runtime_ms=cost.runtime_ms,
                         flops=cost.flops, val_acc=task.accuracy(model, "val", device), arch=str(arch))
        history.append(m)
        if on_epoch is not None:
            on_epoch(m)
    model.eval()
    val_correct = task.correct(model, "val", device)
    return SearchResult(method="final-training", hyperparameters={"lr": lr, "from": str(model_path)},
                        settings=dataclasses.asdict(settings), arch=str(arch), runtime_ms=cost.runtime_ms,
                        flops=cost.flops, params=cost.params, val_acc=accuracy_of(val_correct),
                        val_correct=pack_bits(val_correct), test_acc=task.accuracy(model, "test", device),
                        epochs=settings.epochs, wall_s=round(wall, 3), history=history, model=model, arch_obj=arch)
