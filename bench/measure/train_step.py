"""One training step as the suite's fine-tuning recipe runs it, for the `train` protocol and its prediction.

The step follows the authors' fine-tuning loop (SSAST's and SSAMBA's traintest.py, and the suite's
bench/accuracy/finetune_loop.py): forward, cross-entropy on the classification head, then
`zero_grad(set_to_none=True)`, backward, Adam step (betas 0.95/0.999, as bench/accuracy/recipe.py).
The order matters for memory: the previous step's gradients are still alive during the forward and
are freed just before the backward makes new ones, exactly as in those loops.

The same code runs on a real device (bench/measure/protocols.py `measure_train`) and on PyTorch's
meta device (bench/estimate/train_trace.py), so the predicted training memory is the memory of this
very program: weights, gradients, Adam's two moments, the activations autograd saves, the backward's
temporaries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bench.measure.precision import autocast, grad_scaler

ADAM_BETAS = (0.95, 0.999)  # the authors' fine-tuning optimiser (bench/accuracy/recipe.py)
LEARNING_RATE = 1e-4  # small: timing must not depend on the weights diverging over many steps


@dataclass
class TrainStep:
    """A model in train mode, its optimiser and a fixed batch; `step()` runs one training step."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    inputs: torch.Tensor
    labels: torch.Tensor
    precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # autocast, if any
    scaler: torch.amp.GradScaler | None = field(default=None)  # float16 autocast's loss scaling

    def step(self) -> None:
        with self.precision():  # forward and loss under autocast, as torch's AMP recipe has it
            loss = F.cross_entropy(self.model(self.inputs), self.labels)
        self.optimizer.zero_grad(set_to_none=True)  # the last step's gradients die here, not earlier
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

    def live_tensors(self) -> list[torch.Tensor]:
        """Everything a step starts with: weights, buffers, gradients, optimiser state, batch, labels."""
        tensors = [*self.model.parameters(), *self.model.buffers(), self.inputs, self.labels]
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        return tensors


def make_train_step(model: torch.nn.Module, inputs: torch.Tensor, *, seed: int = 0,
                    num_classes: int | None = None, amp: str = "none") -> TrainStep:
    """The model switched to train mode with a fresh Adam, and labels drawn once (seeded) for `inputs`;
    `amp` (bfloat16 | float16) runs forward and loss under autocast (float16 with a GradScaler).

    Labels come from the model's own head (`num_classes`); a head-less model (num_classes 0) trains
    on its output's last dimension as classes."""
    model.train()
    classes = num_classes or getattr(model, "num_classes", 0) or None
    if classes is None:
        with torch.no_grad():
            classes = model(inputs).shape[-1]
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (inputs.shape[0],), generator=generator).to(inputs.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=ADAM_BETAS)
    device = str(inputs.device)
    return TrainStep(model, optimizer, inputs, labels, precision=lambda: autocast(device, amp),
                     scaler=grad_scaler(device, amp))

