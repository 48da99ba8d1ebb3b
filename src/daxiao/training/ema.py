"""airbench's lookahead (an EMA of the weights that the weights are reset to), as a training callback.

Every `every` steps the running average A of every float tensor in the state dict (weights and BatchNorm
statistics) moves toward the current weights W, A <- A + (1 - d)(W - A), and W is set to A. The decay d
grows over the run as 0.95^every * (t / T)^3: near 0 early (the average simply follows the weights while
they move fast), about 0.77 at the end (late steps are averaged, which removes the last epochs' noise).
After the last step W = A. This is Keller Jordan's schedule from cifar10-airbench (legacy/airbench94.py).
"""

from __future__ import annotations

import torch

from .callbacks import Callback


class Lookahead(Callback):
    """`--lookahead`: see the module docstring. A resumed run restarts the average from the saved weights."""

    def __init__(self, every: int = 5, base: float = 0.95):
        self.every, self.base = every, base
        self.avg: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.step = self.total = 0

    def on_train_begin(self, logs=None):
        logs = logs or {}
        steps = len(self.session.train_loader)
        self.total = max(1, steps * logs.get("epochs", 1))
        self.step = steps * logs.get("initial_epoch", 0)
        self.avg = [(v.detach().clone(), v) for v in self.model.state_dict().values() if v.is_floating_point()]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        for a, w in self.avg:
            a.lerp_(w, 1 - decay)
            w.copy_(a)

    def on_train_batch_end(self, step, logs=None):
        self.step += 1
        if self.step >= self.total:
            self.update(1.0)  # the model ends as the average
        elif self.step % self.every == 0:
            self.update(self.base ** self.every * (self.step / self.total) ** 3)
