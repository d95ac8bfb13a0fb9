"""Numerical tolerances derived from the computation, not tuned to one machine.

Two float32 evaluations of the same expression differ only in the order they add terms: another
CPU kernel family (AVX-512, AVX2, the scalar default), another blocking, a packed row instead of a
padded batch. Each addition rounds by at most u = 2^-24 of its result. Treating the roundings as
independent (Higham and Mary's probabilistic analysis, "A new approach to probabilistic rounding
error analysis", 2019), a sum of n terms is off by at most lambda sqrt(n) u times the sum of the
terms' absolute values, except with probability 2 exp(-lambda^2 / 2) (lambda = 6: 3e-8); two
orders differ by at most twice that. Through a network, each of its `depth` stacked contractions
adds such an error relative to the size of what flows through it (RMSNorm keeps that size from
growing layer to layer), so errors add up over the depth.

A bug in what is computed (a token attending across samples, a position off by one, a missing
term) moves results by a sizeable fraction of their magnitude, orders of magnitude above these.
"""

from __future__ import annotations

import math

U32 = 2.0**-24  # float32 unit roundoff
LAMBDA = 6.0  # the probabilistic bound's confidence: it fails with probability 2 exp(-18) per sum


def reordered_sum(terms: int, magnitude: float) -> float:
    """How far two float32 sums of `terms` values, whose absolute values add up to `magnitude`,
    can land apart when added in two orders."""
    return 2 * LAMBDA * math.sqrt(terms) * U32 * magnitude


def forward(width: int, depth: int, magnitude: float) -> float:
    """How far two float32 evaluations of a network can differ on an output of size `magnitude`:
    `depth` stacked contractions, none longer than `width` terms, each adding `reordered_sum`'s
    error relative to the values it produces."""
    return depth * reordered_sum(width, magnitude)


def transformer_depth(layers: int) -> int:
    """Contractions a value passes through in a decoder of `layers` layers: per layer the q/k/v
    projection, the attention scores, their mixing of values, the output projection and the MLP's
    two matmuls (6), then the LM head; a backward pass runs the same contractions transposed."""
    return 6 * layers + 1


def sgd_weights(steps_lr_grad: list[tuple[float, float]], width: int, depth: int) -> float:
    """How far two SGD runs' weights can end apart when their gradients differ only by summation
    order: step t moves a weight by lr_t g_t, and two orders' g_t differ by at most `forward`'s
    error on a gradient of size |g_t| (bounded by the step's gradient norm); `steps_lr_grad` is
    `[(lr_t, grad norm_t), ...]`. The weights' drift feeds back into later gradients only at
    second order (lr x curvature, small over a few steps). (Adam has no such bound: it divides each update by the
    gradient's own size, so a weight whose gradient is at rounding level can move by a full lr
    either way.)"""
    return sum(lr * forward(width, 2 * depth, grad) for lr, grad in steps_lr_grad)
