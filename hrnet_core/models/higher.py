"""HigherHRNet: HRNet + high-resolution feature pyramid for bottom-up pose.

Follows HH, HigherHRNet paper Sec. 3, FACTS.md section 2.

Layout (official keys):

* ``final_layers.0``: 1x1 conv (bias) ``C -> K (+K tags)`` on the 1/4 branch of the single-scale backbone;
* ``deconv_layers.i`` (``i < num_deconvs``): ``Sequential(Sequential(ConvTranspose2d k4 s2 p1 no bias, BN, ReLU),
  Sequential(BasicBlock) x num_deconv_blocks)``; its input is ``concat(features, previous output)`` when
  ``cat_output[i]`` (paper Sec. 3.3, "feature concatenation"), else the features alone;
* ``final_layers.i+1``: 1x1 conv on the deconv features, resolution ``1 / 2**(2-i-1)``.

Ablation switches (paper Tables 3 and 4): ``num_deconvs`` (0 = HRNet baseline at 1/4, 1 = HigherHRNet at 1/2,
2 = stride 1), ``num_deconv_blocks`` (0 or 4 residual blocks), ``cat_output`` (feature concatenation),
``ae_outputs`` (which outputs carry associative-embedding tags; official ``(True, False)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import BasicBlock, make_layer
from .hrnet import HRNet, HRNetConfig, init_weights


class HigherHRNet(HRNet):
    """HigherHRNet for bottom-up pose with associative embedding.

    ``forward``: image ``[N, 3, H, W]`` -> list of ``num_deconvs + 1`` maps; output ``i`` is
    ``[N, K * (2 if ae_outputs[i] else 1), H / 4 * 2**i, W / 4 * 2**i]`` (heatmaps first, then tags).
    The official model returns ``[ [N, 2K, H/4, W/4], [N, K, H/2, W/2] ]``.

    Args:
        config: backbone config (official: single-scale last module, nearest upsampling).
        num_joints: K (17 COCO, 14 CrowdPose).
        num_deconvs: number of deconvolution modules.
        deconv_channels: output width of each deconv module (official: ``C``, the backbone width).
        num_deconv_blocks: BasicBlocks after each deconvolution (official 4; 0 in Table 3 / Table 4 (b)-(d)).
        cat_output: per deconv module, whether its input concatenates the previous prediction (official ``True``).
        ae_outputs: per output, whether it also predicts ``K`` tag maps (official ``(True, False, ...)``).
        deconv_kernel: transposed-conv kernel, 4 (padding 1), 3 (padding 1, output padding 1) or 2 (padding 0).
        final_kernel: kernel of the ``final_layers`` convs (official 1).

    Raises:
        ValueError: inconsistent lengths of ``cat_output`` / ``ae_outputs`` or an unsupported kernel.
    """

    def __init__(self, config: HRNetConfig | None = None, num_joints: int = 17, num_deconvs: int = 1,
                 deconv_channels: int | None = None, num_deconv_blocks: int = 4,
                 cat_output: bool | Sequence[bool] = True, ae_outputs: Sequence[bool] | None = None,
                 deconv_kernel: int = 4, final_kernel: int = 1) -> None:
        config = config or HRNetConfig(multi_scale_output=False)
        super().__init__(config)
        if num_deconvs < 0 or num_deconv_blocks < 0:
            raise ValueError(f"num_deconvs and num_deconv_blocks must be >= 0, got {num_deconvs}, {num_deconv_blocks}")
        if isinstance(cat_output, bool):
            cat_output = [cat_output] * num_deconvs
        if ae_outputs is None:
            ae_outputs = [True] + [False] * num_deconvs
        cat_output, ae_outputs = [bool(c) for c in cat_output], [bool(a) for a in ae_outputs]
        if len(cat_output) != num_deconvs:
            raise ValueError(f"cat_output needs one entry per deconv module ({num_deconvs}), got {cat_output}")
        if len(ae_outputs) != num_deconvs + 1:
            raise ValueError(f"ae_outputs needs one entry per output ({num_deconvs + 1}), got {ae_outputs}")
        if deconv_kernel not in (2, 3, 4):
            raise ValueError(f"deconv_kernel must be 2, 3 or 4, got {deconv_kernel}")
        self.num_joints = num_joints
        self.num_deconvs = num_deconvs
        self.cat_output = cat_output
        self.ae_outputs = ae_outputs
        deconv_channels = deconv_channels or config.width
        pad = 1 if final_kernel == 3 else 0

        out_dims = [num_joints * (2 if ae else 1) for ae in ae_outputs]
        in_widths = [config.width] + [deconv_channels] * num_deconvs
        self.final_layers = nn.ModuleList(
            [nn.Conv2d(w, d, final_kernel, 1, pad) for w, d in zip(in_widths, out_dims)])

        padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[deconv_kernel]
        self.deconv_layers = nn.ModuleList()
        in_ch = config.width
        for i in range(num_deconvs):
            if cat_output[i]:
                in_ch += out_dims[i]
            layers: list[nn.Module] = [nn.Sequential(
                nn.ConvTranspose2d(in_ch, deconv_channels, deconv_kernel, stride=2, padding=padding,
                                   output_padding=output_padding, bias=False),
                nn.BatchNorm2d(deconv_channels, momentum=config.bn_momentum),
                nn.ReLU(inplace=True))]
            layers += [make_layer(BasicBlock, deconv_channels, deconv_channels, 1, momentum=config.bn_momentum)
                       for _ in range(num_deconv_blocks)]
            self.deconv_layers.append(nn.Sequential(*layers))
            in_ch = deconv_channels
        init_weights(self.final_layers, "normal")
        init_weights(self.deconv_layers, "normal")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feat = self.forward_features(x)[0]
        y = self.final_layers[0](feat)
        outputs = [y]
        for i in range(self.num_deconvs):
            if self.cat_output[i]:
                feat = torch.cat((feat, y), dim=1)
            feat = self.deconv_layers[i](feat)
            y = self.final_layers[i + 1](feat)
            outputs.append(y)
        return outputs
