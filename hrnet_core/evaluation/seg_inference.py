"""The segmentation test procedure: whole-image or sliding-window inference, flip and multi-scale averaging.

HRNetV2 paper Sec. 4.1 and the official SEG test code (FACTS.md section 3):

* ``whole``: the network sees the whole (rescaled) image; logits at 1/4 are upsampled bilinearly to the image size.
* ``slide``: windows of the training crop size at a stride of ``stride`` x crop (2/3), the last window of a row /
  column aligned with the image border (mmsegmentation's grid); every window's logits are upsampled to the window
  and averaged where windows overlap. An image smaller than the window is padded with zeros (after normalisation,
  i.e. the mean colour) to the window size, and the padding is cropped off the scores.
* ``resize``: the image is resized to the crop size, the prediction back to the image size (the official LIP test).
* ``flip``: the mirrored image is predicted too; its class scores are mirrored back and their channels permuted
  (LIP left/right classes) before averaging.
* multi-scale: for each scale ``s`` the image is resized so that its long side is ``s * base_size`` (``base_size``
  0: ``s`` x its own size), predicted as above, and the scores upsampled to the original size.

Averaging: the class probabilities (softmax) of every (scale, flip) pass are averaged, as mmsegmentation's aug test.
The official code sums ``exp(logits)`` of the passes instead; both pick the same class for a single scale with flip
only when the two passes agree in their logit sums, so results can differ slightly with flip or several scales.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["network_logits", "window_grid", "slide_logits", "predict_probs"]


def network_logits(model: torch.nn.Module, x: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Logits of the main output (the last one of an OCR ``[aux, main]``) upsampled to ``x``'s size: ``[N, C, H, W]``
    float32."""
    out = model(x)
    if isinstance(out, (list, tuple)):
        out = out[-1]
    out = out.float()
    if tuple(out.shape[-2:]) != tuple(x.shape[-2:]):
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=align_corners)
    return out


def window_grid(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis of ``size`` pixels: ``0, stride, ...`` with the last window ending at ``size``
    (one window at 0 when ``size <= window``)."""
    if size <= window:
        return [0]
    n = (size - window + stride - 1) // stride + 1
    return sorted({min(k * stride, size - window) for k in range(n)})


def slide_logits(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, crop: tuple[int, int],
                 stride: float, num_classes: int) -> torch.Tensor:
    """Sliding-window scores ``[1, C, H, W]`` of image ``x`` ``[1, 3, H, W]``.

    Args:
        fn: window ``[1, 3, h, w]`` -> scores ``[1, C, h, w]`` at the window's size.
        crop: window ``(w, h)`` in pixels (the training crop).
        stride: fraction of the window between window starts (official 2/3).
    """
    _, _, H, W = x.shape
    cw, ch = int(crop[0]), int(crop[1])
    pad_h, pad_w = max(0, ch - H), max(0, cw - W)
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    Hp, Wp = x.shape[-2:]
    sy, sx = max(1, int(round(ch * stride))), max(1, int(round(cw * stride)))
    total = torch.zeros((1, num_classes, Hp, Wp), device=x.device)
    count = torch.zeros((1, 1, Hp, Wp), device=x.device)
    for y in window_grid(Hp, ch, sy):
        for x0 in window_grid(Wp, cw, sx):
            total[:, :, y:y + ch, x0:x0 + cw] += fn(x[:, :, y:y + ch, x0:x0 + cw])
            count[:, :, y:y + ch, x0:x0 + cw] += 1
    return (total / count)[:, :, :H, :W]


def predict_probs(model: torch.nn.Module, image: torch.Tensor, *, num_classes: int, mode: str = "whole",
                  crop: tuple[int, int] = (512, 512), stride: float = 2.0 / 3.0, flip: bool = False,
                  flip_permutation: Sequence[int] | None = None, scales: Sequence[float] = (1.0,),
                  base_size: int = 0, align_corners: bool = False) -> torch.Tensor:
    """Averaged class probabilities ``[C, H, W]`` (float32, on ``image``'s device) of one normalised image
    ``[3, H, W]`` by the test procedure of the module docstring.

    Args:
        mode: ``whole``, ``slide`` or ``resize``.
        crop: window / resize size ``(w, h)``.
        flip_permutation: class channel order under a horizontal flip (identity when None).
        scales: image scales (official multi-scale: 0.5 .. 1.75 or 2.0 in steps of 0.25).
        base_size: long side at scale 1 (0: the image's own size).
        align_corners: of every bilinear resize of logits (the network's setting).

    Raises:
        ValueError: unknown mode or an empty ``scales``.
    """
    if mode not in ("whole", "slide", "resize"):
        raise ValueError(f"test.mode must be whole, slide or resize, got {mode!r}")
    if not scales:
        raise ValueError("test.scales must not be empty")
    _, H, W = image.shape
    x0 = image[None]
    perm = list(flip_permutation) if flip_permutation is not None else None

    def probs_of(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if mode == "resize":
            xr = F.interpolate(x, size=(crop[1], crop[0]), mode="bilinear", align_corners=align_corners)
            out = F.softmax(network_logits(model, xr, align_corners), dim=1)
            return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=align_corners)
        if mode == "slide":
            return slide_logits(lambda t: F.softmax(network_logits(model, t, align_corners), dim=1), x, crop,
                                stride, num_classes)
        return F.softmax(network_logits(model, x, align_corners), dim=1)

    total = torch.zeros((1, num_classes, H, W), device=image.device)
    passes = 0
    for s in scales:
        if base_size > 0:
            long_side = s * base_size
            f = long_side / max(H, W)
        else:
            f = float(s)
        h, w = max(1, int(round(H * f))), max(1, int(round(W * f)))
        x = x0 if (h, w) == (H, W) else F.interpolate(x0, size=(h, w), mode="bilinear", align_corners=align_corners)
        views = [(x, False)] + ([(torch.flip(x, dims=[3]), True)] if flip else [])
        for xv, flipped in views:
            p = probs_of(xv)
            if flipped:
                p = torch.flip(p, dims=[3])
                if perm is not None:
                    p = p[:, perm]
            if p.shape[-2:] != (H, W):
                p = F.interpolate(p, size=(H, W), mode="bilinear", align_corners=align_corners)
            total += p
            passes += 1
    return (total / passes)[0]
