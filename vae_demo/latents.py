"""Operations on latent codes: interpolation, arithmetic, attribute edits, traversals.

All functions take and return codes of shape (..., D) and know nothing about images, so the
app, the evaluation and a notebook all use the same few lines.

Usage:
    >>> import torch
    >>> a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    >>> slerp(a, b, 0.5)
    tensor([0.7071, 0.7071])
    >>> arithmetic([a], [b], [b])  # a - b + b
    tensor([1., 0.])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def lerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Straight line: (1 - t) a + t b."""
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models).

    Moves along the great circle between the directions of a and b while the norm goes
    linearly from |a| to |b|, so midpoints keep the norm typical of Gaussian codes instead
    of shrinking towards the origin. Exact at t = 0 and t = 1; falls back to lerp when a and b
    are (anti)parallel.
    """
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    if t.dim() == 1:
        t = t[:, None]
    norm_a, norm_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    unit_a, unit_b = a / norm_a.clamp_min(eps), b / norm_b.clamp_min(eps)
    cos = (unit_a * unit_b).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / sin.clamp_min(eps)
    result = direction * lerp(norm_a, norm_b, t)
    result = torch.where(sin.abs() < 1e-4, lerp(a, b, t), result)
    # Return the endpoints themselves, not their round trip through sin and cos.
    result = torch.where(t == 0, a, result)
    return torch.where(t == 1, b, result)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, method: str = "slerp") -> torch.Tensor:
    """`steps` codes from a to b inclusive, shape (steps, D)."""
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device)
    if method == "slerp":
        return slerp(a.expand(steps, -1), b.expand(steps, -1), t)
    if method == "lerp":
        return lerp(a, b, t[:, None])
    raise ValueError(f"method must be 'slerp' or 'lerp', got {method!r}")


def group_mean(codes: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """The mean code of a group of one or more images (each (D,) or a (N, D) stack)."""
    if len(codes) == 0:
        raise ValueError("a group needs at least one image")
    stacked = codes.reshape(-1, codes.shape[-1]) if isinstance(codes, torch.Tensor) else torch.stack(list(codes))
    return stacked.mean(0)


def arithmetic(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], c: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean(A) - mean(B) + mean(C): what A has and B lacks, added to C.

    The seed tutorial's example: men with glasses - women with glasses + women without
    glasses = men without glasses. Averaging a few images per group cancels what is
    particular to one photo (pose, light) and keeps what the group shares.
    """
    return group_mean(a) - group_mean(b) + group_mean(c)


def edit(z: torch.Tensor, direction: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
    """Move codes along an attribute direction: z + strength * direction.

    `strength` is one number for all codes (N, D), or one per code (N,).
    """
    strength = torch.as_tensor(strength, dtype=z.dtype, device=z.device)
    return z + (strength[:, None] if strength.dim() == 1 else strength) * direction


def hold(
    read: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    target: torch.Tensor,
    direction: torch.Tensor,
    steps: int = 3,
    reach: float = 1.0,
) -> torch.Tensor:
    """Move each code along `direction` until `read` gives back its target: z + c direction, one c per code.

    An edit along one direction can change what another reads (drawn glasses change the sex
    a classifier sees); this puts that reading back with the least change, along the
    direction that moves it. It solves read(z + c direction) = target for each c by the
    secant method, from c = 0 and a first step of 0.2 towards the target; where a step
    barely changes the reading, the codes' median slope stands in for it.

    Args:
        read: Codes (N, D) -> scores (N,), growing along `direction`; called `steps` + 1 times.
        z: Codes (N, D), already edited.
        target: The scores (N,) to hold, read before the edit.
        direction: The direction (D,) to move along.
        steps: Secant steps after the first reading.
        reach: The largest |c| allowed, in units of `direction`.

    Returns:
        Codes (N, D).

    Usage:
        >>> double = lambda z: 2 * z[:, 0]  # a reader linear in the first coordinate
        >>> hold(double, torch.zeros(1, 2), torch.tensor([1.0]), torch.tensor([1.0, 0.0]))
        tensor([[0.5000, 0.0000]])
    """
    c_old, miss_old = torch.zeros(len(z)), read(z) - target
    c = (-0.2 * miss_old.sign()).clamp(-reach, reach)
    for _ in range(steps):
        miss = read(z + c[:, None] * direction) - target
        moved = c - c_old
        slope = (miss - miss_old) / moved.where(moved != 0, torch.ones(()))
        usable = (slope > 1e-2) & (moved != 0)
        typical = slope[usable].median() if usable.any() else torch.ones(())
        slope = slope.where(usable, typical)
        c_old, miss_old, c = c, miss, (c - miss / slope).clamp(-reach, reach)
    return z + c[:, None] * direction


def traversal(z: torch.Tensor, direction: torch.Tensor, strengths: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """One code moved to each strength along a direction, shape (len(strengths), D)."""
    strengths = torch.as_tensor(strengths, dtype=z.dtype, device=z.device)
    return z + strengths[:, None] * direction
