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

import itertools
import math

U32 = 2.0**-24  # float32 unit roundoff
LAMBDA = 6.0  # the probabilistic bound's confidence: it fails with probability 2 exp(-18) per sum
UNIT_ROUNDOFF = {"float32": U32, "float16": 2.0**-11, "bfloat16": 2.0**-8}  # 24, 11 and 8 significant bits


def reordered_sum(terms: int, magnitude: float) -> float:
    """How far two float32 sums of `terms` values, whose absolute values add up to `magnitude`,
    can land apart when added in two orders."""
    return 2 * LAMBDA * math.sqrt(terms) * U32 * magnitude


def forward(width: int, depth: int, magnitude: float) -> float:
    """How far two float32 evaluations of a network can differ on an output of size `magnitude`:
    `depth` stacked contractions, none longer than `width` terms, each adding `reordered_sum`'s
    error relative to the values it produces."""
    return depth * reordered_sum(width, magnitude)


def network(*configs, tokens: int = 0) -> tuple[int, int]:
    """`(width, depth)` of the models of these transformers configs run in series (an LLM and its
    vision tower; a multimodal config's `vision_config` counts as its tower): the longest
    contraction is the widest hidden or MLP size, or `tokens` (an attention row over that many
    positions, a weight's gradient summed over them); the depth is `transformer_depth` of all their
    layers, plus two for the projector's or the fusion branch's two matmuls when a tower feeds an
    LLM."""
    configs = [*configs, *(c.vision_config for c in configs if getattr(c, "vision_config", None))]
    width = max(tokens, *(max(c.hidden_size, c.intermediate_size) for c in configs))
    depth = transformer_depth(sum(c.num_hidden_layers for c in configs)) + (2 if len(configs) > 1 else 0)
    return width, depth


def model_forward(reference, *configs, tokens: int = 0) -> float:
    """`forward` for the models of these configs (`network`'s width and depth) on outputs the size
    of `reference`'s largest absolute value: how far two float32 evaluations of them can land apart."""
    return forward(*network(*configs, tokens=tokens), reference.abs().max().item())


def low_precision(dtype, depth: int, scale: float) -> float:
    """How far a network evaluated in bfloat16 or float16 can land from its float32 evaluation on
    any of outputs whose root mean square is `scale`. Each of its `depth` stacked contractions
    reads weights stored in the dtype and rounds its result to it (its input is the previous
    one's result): two roundings per term, each a relative error up to the dtype's unit roundoff
    u, uniform (standard deviation u / sqrt 3) and independent. A sum of terms of random signs is
    about as large as the root of their squares' sum, so a contraction's results are off by a
    random error of standard deviation sqrt(2 / 3) u times their root mean square, and the
    contractions' errors, independent, add in quadrature: lambda sqrt(2 depth / 3) u scale.
    (Adding them up linearly, as `forward` does, would be vacuous here: at bfloat16's u = 2^-8 it
    reaches the outputs' own size within about 50 contractions.)"""
    return LAMBDA * math.sqrt(2 * depth / 3) * UNIT_ROUNDOFF[str(dtype).removeprefix("torch.")] * scale


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
    second order (lr x curvature, small over a few steps). (Adam has no such bound at its usual
    epsilon: it divides each update by the gradient's own size, so a weight whose gradient is at
    rounding level can move by a full lr either way; `adam_weights` bounds it when epsilon is
    large.)"""
    return sum(lr * forward(width, 2 * depth, grad) for lr, grad in steps_lr_grad)


def adam_weights(
    steps_lr_grad: list[tuple[float, float]], width: int, depth: int, epsilon: float, largest_grad: float
) -> float:
    """`sgd_weights` for Adam with an `epsilon` large enough to matter: its update lr m / (sqrt(v) +
    eps) reads the moments, m a weighted average of the gradients so far and sqrt(v) their weighted
    root mean square, each off by at most the largest of their differences; with |m| at most
    `largest_grad` (a clipped gradient's norm bounds its entries), the update moves by at most
    lr (1 / eps + largest_grad / eps^2) per unit of that difference: SGD's bound with the learning
    rates scaled so and each step's gradient size the largest so far. At Adam's usual eps = 1e-8
    the scale is vast."""
    scale = 1 / epsilon + largest_grad / epsilon**2
    largest_so_far = itertools.accumulate((grad for _, grad in steps_lr_grad), max)
    scaled = [(lr * scale, size) for (lr, _), size in zip(steps_lr_grad, largest_so_far, strict=True)]
    return sgd_weights(scaled, width, depth)


def sample_std(draws: int, kurtosis: float = 3.0) -> float:
    """How far the standard deviation of `draws` independent draws can land from their
    distribution's, relative to it: lambda times its standard error sqrt((kurtosis - 1) / (4
    draws)) (the sample variance's is sqrt((kurtosis - 1) / draws) relative; the square root
    halves it). The kurtosis is 3 for a normal distribution, 9/5 for a uniform one."""
    return LAMBDA * math.sqrt((kurtosis - 1) / (4 * draws))
