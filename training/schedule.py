"""The paper's optimiser schedule: Adam, learning rate 1e-3, x0.97 every 400 steps.

Section IV-A: "we utilized the Adam optimizer algorithm and used exponential decay for the
learning rate in fixed number of epochs; ... the initial learning rate was set to 0.001, the
decay steps for the learning rate were 400 and its decay factor was 0.97. The platform used
for this implementation was Tensorflow." That is TensorFlow's
``exponential_decay(0.001, global_step, decay_steps=400, decay_rate=0.97, staircase=...)``.

**Staircase.** ``lr = 1e-3 * 0.97 ** (step // 400)``: the rate drops by 3% once every 400
steps and is constant in between (TensorFlow's ``staircase=True``), rather than
``0.97 ** (step / 400)`` continuously (its default). Why: the paper speaks of decaying "in fixed
number of epochs", a decay at fixed intervals, which is the staircase; the two never differ
by more than 3% (the continuous one is at most one 0.97 factor ahead), so the choice matters
little for the result, and the staircase keeps the rate a simple function of the step that a
resumed run recomputes exactly. ``staircase=False`` gives the continuous form.

The rate is a pure function of the global step, set before each optimiser step: no scheduler
state to save, and a resumed run continues the same curve.
"""

from __future__ import annotations

import torch

#: Initial learning rate (Section IV-A).
LEARNING_RATE = 1e-3
#: Decay factor and period in optimiser steps (Section IV-A).
DECAY_RATE = 0.97
DECAY_STEPS = 400
#: TensorFlow's ``exponential_decay(staircase=True)``; see the module docstring.
STAIRCASE = True


def learning_rate(
    step: int,
    initial: float = LEARNING_RATE,
    decay_rate: float = DECAY_RATE,
    decay_steps: int = DECAY_STEPS,
    staircase: bool = STAIRCASE,
) -> float:
    """The rate for global step ``step`` (0-based: the first update uses ``step=0``)."""
    exponent = step // decay_steps if staircase else step / decay_steps
    return initial * decay_rate**exponent


def make_optimizer(parameters, initial: float = LEARNING_RATE) -> torch.optim.Adam:
    """Adam with the defaults TensorFlow 1's ``AdamOptimizer`` also has (betas 0.9, 0.999;
    epsilon 1e-8; TensorFlow adds epsilon after the bias correction, a negligible difference)."""
    return torch.optim.Adam(parameters, lr=initial)


def set_learning_rate(optimizer: torch.optim.Optimizer, step: int, **schedule) -> float:
    lr = learning_rate(step, **schedule)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
