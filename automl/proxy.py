"""Proxy training of one architecture: a few epochs from scratch, for a "representative proxy-accuracy
value" (Single-Path NAS paper Sec. VII-A, after MnasNet's aggressive training). The intra-run variance
of Fig. 8 trains architectures sampled from a softmax search's distribution this way.

The loop is random search's (searchers/random_search.py): Adam, cosine-decayed per step, augmented
batches, the task's own splits; the seed is real (init, batch order and augmentation).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from searchers import RunSettings, UsageError
from searchers.cost import exact_cost
from searchers.training import train_one_epoch

from .results import write_json


def proxy_train(arch, task, settings: RunSettings, *, lr: float = 3e-3) -> dict:
    """Train `arch` (an MBConvArch) for settings.epochs; its accuracies and cost."""
    device = torch.device(settings.device)
    torch.manual_seed(settings.seed)
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    task.to(device)
    model = arch.build().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # every epoch has the same number of steps: the mean of the epochs' means is the mean over all steps
    losses = [train_one_epoch(model, opt, task, batch_size=settings.batch_size, generator=generator, lr=lr,
                              epoch=epoch, epochs=settings.epochs, device=device)
              for epoch in range(settings.epochs)]
    cost = exact_cost(arch, task, settings)
    return dict(val_acc=task.accuracy(model, "val"), test_acc=task.accuracy(model, "test"),
                runtime_ms=cost.runtime_ms, flops=cost.flops, loss=sum(losses) / len(losses), arch=str(arch))


SAMPLES = "arch_samples.json"


def sample_hook(n: int):
    """light_trial's `after`: save `n` architectures sampled from the finished search's distribution
    (searchers with `sample_archs`, e.g. Single-Path NAS softmax) beside its result, drawn with a
    generator seeded by the search's seed. Searchers without a distribution save nothing."""
    def after(searcher, result_dir: Path) -> None:
        if not hasattr(searcher, "sample_archs"):
            return
        try:
            archs = searcher.sample_archs(n, torch.Generator().manual_seed(searcher.settings.seed))
        except UsageError:   # e.g. the sigmoid variant: thresholds, not a distribution
            return
        write_json(Path(result_dir) / SAMPLES, [{"space": a.space, "arch": str(a)} for a in archs])
    return after


def load_samples(result_dir) -> list | None:
    from searchers.spaces import parse_arch

    path = Path(result_dir) / SAMPLES
    if not path.is_file():
        return None
    return [parse_arch(s["space"], s["arch"]) for s in json.loads(path.read_text())]
