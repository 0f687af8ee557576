"""Bottom-up pose losses (HigherHRNet paper Sec. 3.4; associative embedding, Newell et al. 2017; FACTS.md section 2).

- :func:`masked_heatmap_loss`: per image ``mean((pred - gt)^2 * mask)`` over joints and cells (official
  ``HeatmapLoss``), at every supervised resolution;
- :func:`ae_loss`: associative-embedding grouping loss on one tag map per joint (official ``AELoss``, ``exp`` push):
  ``pull = mean_p mean_{j in p} (t_pj - tbar_p)^2``; ``push = sum_{p != q} exp(-(tbar_p - tbar_q)^2) /
  (n (n - 1)) * 0.5`` over the ``n`` people with labelled joints (0 when ``n < 2``; pull 0 when ``n = 0``).
  Vectorised over people and images (the official code loops); the values are the same.

The official factors: heatmap 1.0 at each resolution, push 1e-3 and pull 1e-3 on the 1/4 tags only.
"""

from __future__ import annotations

import torch

__all__ = ["masked_heatmap_loss", "ae_loss"]


def masked_heatmap_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image masked heatmap MSE.

    Args:
        pred, target: ``[B, K, h, w]``. mask: ``[B, h, w]`` (1 counts, 0 ignored).

    Returns:
        ``[B]``: ``mean over K, h, w of (pred - target)^2 * mask``.
    """
    return ((pred - target) ** 2 * mask[:, None]).mean(dim=(1, 2, 3))


def ae_loss(tags: torch.Tensor, joints: torch.Tensor, loss_type: str = "exp") -> tuple[torch.Tensor, torch.Tensor]:
    """Associative-embedding push and pull losses per image.

    Args:
        tags: ``[B, K, h, w]`` one tag map per joint (or ``[B, K*h*w]``, flattened the same way).
        joints: int64 ``[B, M, K, 2]``: ``(flat index into [K, h, w], valid)`` per person slot and joint
            (:func:`hrnet_core.data.bottomup.encode_joint_indices`).
        loss_type: ``"exp"`` (HigherHRNet) or ``"max"`` (``max(0, 1 - |d|)`` hinge of the original AE code).

    Returns:
        ``(push [B], pull [B])``.

    Raises:
        ValueError: unknown ``loss_type``.
    """
    if loss_type not in ("exp", "max"):
        raise ValueError(f"ae loss_type must be 'exp' or 'max', got {loss_type!r}")
    b = tags.shape[0]
    flat = tags.reshape(b, -1)
    idx = joints[..., 0].long()
    valid = (joints[..., 1] > 0).to(flat.dtype)                                    # [B, M, K]
    t = torch.gather(flat, 1, idx.reshape(b, -1)).reshape(idx.shape)                # [B, M, K]
    count = valid.sum(dim=2)                                                        # [B, M]
    person = count > 0
    mean = (t * valid).sum(dim=2) / count.clamp(min=1)                              # [B, M]
    pull_p = (((t - mean[..., None]) ** 2) * valid).sum(dim=2) / count.clamp(min=1)
    n = person.sum(dim=1).to(flat.dtype)                                            # [B]
    pull = torch.where(n > 0, (pull_p * person).sum(dim=1) / n.clamp(min=1), torch.zeros_like(n))
    diff = mean[:, :, None] - mean[:, None, :]                                       # [B, M, M]
    pair = person[:, :, None] & person[:, None, :]
    pair = pair & ~torch.eye(pair.shape[1], dtype=torch.bool, device=pair.device)[None]
    if loss_type == "exp":
        value = torch.exp(-(diff**2))
    else:
        value = torch.clamp(1 - diff.abs(), min=0)
    push_sum = (value * pair).sum(dim=(1, 2))
    push = torch.where(n > 1, push_sum / (n * (n - 1)).clamp(min=1) * 0.5, torch.zeros_like(n))
    return push, pull
