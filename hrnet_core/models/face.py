"""Facial landmark network: HRNetV2-W18 + heatmap head (FACE; HRNetV2 paper Sec. 4.2, FACTS.md section 4).

The four branches are bilinearly upsampled (``align_corners=False``) to 1/4 and concatenated (``15C``, 270 for W18);
``head`` = 1x1 conv (bias) ``15C -> 15C``, BN, ReLU, 1x1 conv (bias) ``-> num_landmarks`` (keys ``head.0/.1/.3``).
"""

from __future__ import annotations

import torch

from .hrnet import HRNet, HRNetConfig, concat_branches, hrnetv2_channels, init_weights
from .seg import _linear_head


class FaceHRNet(HRNet):
    """HRNetV2 for facial landmark heatmaps.

    ``forward``: image ``[N, 3, H, W]`` (256x256 officially) -> heatmaps ``[N, num_landmarks, H/4, W/4]``.

    Args:
        config: backbone config (official: W18, bilinear fuse upsampling, ``align_corners=False``, BN momentum 0.01).
        num_landmarks: 98 (WFLW), 19 (AFLW), 29 (COFW), 68 (300W).
        final_kernel: kernel of the last conv (1 in every official config).
    """

    def __init__(self, config: HRNetConfig | None = None, num_landmarks: int = 98, final_kernel: int = 1) -> None:
        config = config or HRNetConfig(width=18, upsample="bilinear", bn_momentum=0.01)
        if not config.multi_scale_output:
            raise ValueError("FaceHRNet needs multi_scale_output=True (HRNetV2 concatenates all branches)")
        super().__init__(config)
        self.num_landmarks = num_landmarks
        self.head = _linear_head(hrnetv2_channels(config), num_landmarks, config.bn_momentum, final_kernel)
        init_weights(self.head, "normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(concat_branches(self.forward_features(x), self.config.align_corners))
