"""Pieces of a training loop that every searcher shares: optimiser, schedule, device-side averages."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cosine_lr(base: float, epoch: int, step: int, steps_per_epoch: int, epochs: int) -> float:
    """Cosine decay over the whole search, per step (so a resumed run continues the same curve)."""
    t = (epoch + step / max(steps_per_epoch, 1)) / max(epochs, 1)
    return 0.5 * base * (1 + math.cos(math.pi * min(t, 1.0)))


def set_lr(opt: torch.optim.Optimizer, lr: float, group: int = 0) -> None:
    opt.param_groups[group]["lr"] = lr


class Mean:
    """Running mean kept on the device: no host sync (.item()) inside the training step."""

    def __init__(self):
        self.total, self.n = None, 0

    def add(self, value: torch.Tensor) -> None:
        v = value.detach().float()
        self.total = v if self.total is None else self.total + v
        self.n += 1

    def get(self) -> float:
        return float(self.total) / self.n if self.n else float("nan")


def autocast(device: torch.device):
    """bf16 autocast on CUDA (where it pays), a no-op on CPU (keeps CPU runs bit-reproducible)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def endless_batches(task, batch_size: int, generator: torch.Generator | None, augment: bool = True):
    """Training batches of `task` without end (a new shuffle per pass): the architecture steps of a
    bilevel method draw from its architecture part of the training split (data.arch_split) one batch
    per weight step, whatever the two parts' sizes."""
    while True:
        yield from task.batches("train", batch_size, generator, augment=augment)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size) if n >= batch_size else 1


@torch.no_grad()
def eval_logits(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits of a channels_last search network (what its derived child must reproduce)."""
    net.eval()
    return net(x.contiguous(memory_format=torch.channels_last))


def train_one_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, task, *, batch_size: int,
                    generator: torch.Generator | None, lr: float, epoch: int, epochs: int,
                    device: torch.device) -> float:
    """One epoch of plain supervised training of a fixed network (cross-entropy, cosine lr per step,
    crop/flip augmentation): what random search gives each candidate and what a delivered network's
    final training runs. Returns the epoch's mean loss."""
    n_steps = steps_per_epoch(len(task.train[1]), batch_size)
    model.train()
    loss_m = Mean()
    for step, (x, y) in enumerate(task.batches("train", batch_size, generator, augment=True, drop_last=True)):
        set_lr(opt, cosine_lr(lr, epoch, step, n_steps, epochs))
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        loss_m.add(loss)
    return loss_m.get()
