"""Two-stage detectors with the HRNetV2p backbone on torchvision: Faster R-CNN, Mask R-CNN, Cascade R-CNN.

HRNetV2 paper Sec. 5 (object detection, Tables 6-8), FACTS.md section 6; configuration facts from the official
HRNet-Object-Detection release (an mmdetection fork, "DET"):

* backbone + neck: :class:`~hrnet_core.models.hrfpn.HRNetV2p` (HRNet + HRFPN), 5 maps ``"0".."4"`` of 256 channels at
  strides 4, 8, 16, 32, 64;
* RPN: one anchor size per level, ``8 * stride`` (32, 64, 128, 256, 512 px) with aspect ratios 0.5 / 1 / 2 (3
  anchors per location); IoU 0.7 / 0.3, 256 anchors per image, half positive;
* RoIAlign 7x7 (sampling ratio 2) on strides 4..32 (maps ``"0".."3"``), level ``floor(4 + log2(sqrt(wh) / 224))``
  (torchvision's ``LevelMapper``, equal to mmdetection's ``floor(log2(sqrt(wh) / 56))`` mapping);
  2-FC box head (1024), class-specific box regression with weights (10, 10, 5, 5) (target stds 0.1 / 0.2);
  512 RoIs per image, a quarter positive at IoU 0.5; test: score > 0.05, NMS 0.5 per class, 100 detections;
* Mask R-CNN: RoIAlign 14x14 on the same levels, four 3x3 convs (256) + deconv + per-class 1x1 conv (28x28 masks);
* Cascade R-CNN (Cai & Vasconcelos 2018; DET ``cascade_rcnn_hrnetv2p``): three 2-FC box heads trained at IoU 0.5 /
  0.6 / 0.7 with class-agnostic regression and weights (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15); stage
  loss weights 1, 0.5, 0.25; each stage regresses the (detached) boxes of the previous one; at test the class logits
  of the three stages are averaged and the boxes come from the last stage.

Everything but the cascade is torchvision's: ``FasterRCNN`` / ``MaskRCNN`` with our backbone, ``AnchorGenerator``,
``MultiScaleRoIAlign``, ``RoIHeads`` (sampling, matching, ``fastrcnn_loss``, ``postprocess_detections``).
:class:`CascadeRoIHeads` drives three torchvision ``RoIHeads`` stages.

Input normalisation happens inside the model (ImageNet mean / std on ``[0, 1]`` RGB images, the DET config's
``mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]``); images are padded to a multiple of 32. Training
images arrive resized by the data pipeline (short side ``min_size``, long side at most ``max_size``, seeded
multi-scale and flip); at test time the model resizes them itself (torchvision's ``GeneralizedRCNNTransform``, same
rule) and returns boxes / masks in the input image's pixels.

Differences from DET that remain (documented, not hidden): torchvision's Fast R-CNN box loss is smooth-L1 with
``beta = 1/9`` summed over positives and divided by the sampled RoIs (DET: smooth-L1 ``beta = 1``, mean); anchors
are centred on ``stride * i`` (DET v1: ``stride * i + (stride - 1) / 2``); the Cascade's refined boxes keep the
ground-truth RoIs that the sampler appended (DET drops them before refining).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .hrfpn import HRNetV2p

__all__ = ["DETECTORS", "DetectorConfig", "build_detector", "CascadeRoIHeads", "AgnosticBoxPredictor",
           "IMAGE_MEAN", "IMAGE_STD", "set_norm_eval", "raw_detections"]

#: detector architectures of :func:`build_detector`
DETECTORS = ("faster_rcnn", "mask_rcnn", "cascade_rcnn")
#: ImageNet normalisation of ``[0, 1]`` RGB images (DET: mean 123.675 / 116.28 / 103.53, std 58.395 / 57.12 / 57.375)
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DetectorConfig:
    """Head settings of :func:`build_detector` (defaults: DET / the HRNetV2 paper).

    Attributes:
        detector: ``faster_rcnn`` | ``mask_rcnn`` | ``cascade_rcnn``.
        num_classes: classes including background (COCO: 81).
        min_size, max_size: test-time resize, short side / long-side cap (px).
        anchor_sizes: one anchor size per pyramid level (px), 5 levels.
        aspect_ratios: anchor aspect ratios (h / w).
        rpn_batch_size_per_image, rpn_positive_fraction: RPN anchor sampling.
        rpn_pre_nms_top_n_train / test, rpn_post_nms_top_n_train / test, rpn_nms_thresh: proposals.
        box_batch_size_per_image, box_positive_fraction: RoI sampling.
        box_score_thresh, box_nms_thresh, box_detections_per_img: test post-processing.
        cascade_iou: IoU threshold of each cascade stage.
        cascade_bbox_weights: box-coder weights (1 / target std) of each stage.
        cascade_stage_weights: loss weight of each stage.
        representation_size: width of the two FC layers of every box head (DET: 1024; smoke runs shrink it).
    """

    detector: str = "faster_rcnn"
    num_classes: int = 81
    min_size: int = 800
    max_size: int = 1333
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    cascade_iou: tuple[float, ...] = (0.5, 0.6, 0.7)
    cascade_bbox_weights: tuple[tuple[float, float, float, float], ...] = (
        (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
    cascade_stage_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    representation_size: int = 1024

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector {self.detector!r} is not one of {DETECTORS}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes} must count the background class too (COCO: 81)")
        n = len(self.cascade_iou)
        if len(self.cascade_bbox_weights) != n or len(self.cascade_stage_weights) != n:
            raise ValueError(f"cascade_iou, cascade_bbox_weights and cascade_stage_weights need one entry per stage "
                             f"({n}), got {len(self.cascade_bbox_weights)} and {len(self.cascade_stage_weights)}")


class AgnosticBoxPredictor(nn.Module):
    """Class scores plus ONE class-agnostic box regression (Cascade R-CNN heads).

    ``forward``: RoI features ``[R, C]`` (or ``[R, C, 1, 1]``) -> ``(logits [R, K], deltas [R, 4 * K])``; the four
    deltas are repeated for every class so that torchvision's ``fastrcnn_loss`` and ``postprocess_detections``
    (written for class-specific regression) apply unchanged.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x).repeat(1, self.num_classes)


class CascadeRoIHeads(nn.Module):
    """Cascade R-CNN RoI heads: ``stages`` are torchvision ``RoIHeads`` (one matcher / sampler / box coder / 2-FC
    head / :class:`AgnosticBoxPredictor` each) sharing one ``MultiScaleRoIAlign``.

    ``forward(features, proposals, image_shapes, targets)`` follows ``RoIHeads.forward``: training returns
    ``([], {"loss_classifier": sum_t w_t L_cls^t, "loss_box_reg": sum_t w_t L_box^t, "loss_classifier_s<t>",
    "loss_box_reg_s<t>"})`` (the weighted stage parts); eval returns one dict per image with ``boxes [D, 4]`` (xyxy
    px of the transformed image), ``scores [D]``, ``labels [D]`` int64, and ``{}``.

    Args:
        stages: the box stages in order (their ``proposal_matcher`` thresholds rising).
        stage_weights: loss weight of each stage.
    """

    def __init__(self, stages: Sequence[nn.Module], stage_weights: Sequence[float]) -> None:
        super().__init__()
        if len(stages) != len(stage_weights):
            raise ValueError(f"{len(stages)} stages but {len(stage_weights)} stage weights")
        self.stages = nn.ModuleList(stages)
        self.stage_weights = tuple(float(w) for w in stage_weights)

    # GeneralizedRCNN and the evaluation code ask these of torchvision's RoIHeads
    def has_mask(self) -> bool:
        return False

    def has_keypoint(self) -> bool:
        return False

    def _stage_outputs(self, stage, features, proposals, image_shapes):
        x = stage.box_roi_pool(features, proposals, image_shapes)
        return stage.box_predictor(stage.box_head(x))

    @staticmethod
    def _refine(stage, box_regression: torch.Tensor, proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Proposals regressed by ``stage`` (class-agnostic deltas: class 1's copy), clipped, detached."""
        from torchvision.ops import boxes as box_ops

        counts = [len(p) for p in proposals]
        boxes = stage.box_coder.decode(box_regression.detach(), proposals)[:, 1]
        return [box_ops.clip_boxes_to_image(b, s) for b, s in zip(boxes.split(counts, 0), image_shapes)]

    def forward(self, features, proposals, image_shapes, targets=None):
        from torchvision.models.detection.roi_heads import fastrcnn_loss

        last = len(self.stages) - 1
        if self.training:
            if targets is None:
                raise ValueError("CascadeRoIHeads needs targets in training mode")
            losses: dict[str, torch.Tensor] = {}
            for t, (stage, w) in enumerate(zip(self.stages, self.stage_weights)):
                proposals, _, labels, reg_targets = stage.select_training_samples(proposals, targets)
                logits, deltas = self._stage_outputs(stage, features, proposals, image_shapes)
                l_cls, l_box = fastrcnn_loss(logits, deltas, labels, reg_targets)
                losses[f"loss_classifier_s{t}"] = w * l_cls
                losses[f"loss_box_reg_s{t}"] = w * l_box
                if t < last:
                    proposals = self._refine(stage, deltas, proposals, image_shapes)
            losses["loss_classifier"] = sum(losses[f"loss_classifier_s{t}"] for t in range(last + 1))
            losses["loss_box_reg"] = sum(losses[f"loss_box_reg_s{t}"] for t in range(last + 1))
            return [], losses
        all_logits = []
        for t, stage in enumerate(self.stages):
            logits, deltas = self._stage_outputs(stage, features, proposals, image_shapes)
            all_logits.append(logits)
            if t < last:
                proposals = self._refine(stage, deltas, proposals, image_shapes)
        logits = torch.stack(all_logits).mean(0)
        boxes, scores, labels = self.stages[last].postprocess_detections(logits, deltas, proposals, image_shapes)
        return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)], {}


def _cascade_heads(cfg: DetectorConfig, box_roi_pool: nn.Module, resolution: int, out_channels: int):
    from torchvision.models.detection.faster_rcnn import TwoMLPHead
    from torchvision.models.detection.roi_heads import RoIHeads

    stages = []
    for iou, weights in zip(cfg.cascade_iou, cfg.cascade_bbox_weights):
        stages.append(RoIHeads(
            box_roi_pool, TwoMLPHead(out_channels * resolution ** 2, cfg.representation_size),
            AgnosticBoxPredictor(cfg.representation_size, cfg.num_classes),
            fg_iou_thresh=iou, bg_iou_thresh=iou, batch_size_per_image=cfg.box_batch_size_per_image,
            positive_fraction=cfg.box_positive_fraction, bbox_reg_weights=tuple(weights),
            score_thresh=cfg.box_score_thresh, nms_thresh=cfg.box_nms_thresh,
            detections_per_img=cfg.box_detections_per_img))
    return CascadeRoIHeads(stages, cfg.cascade_stage_weights)


def build_detector(backbone: HRNetV2p, cfg: DetectorConfig | None = None) -> nn.Module:
    """The torchvision detector ``cfg.detector`` on ``backbone`` (a :class:`HRNetV2p`, 5 levels).

    ``model(images, targets)`` in train mode: ``images`` list of float ``[3, H_i, W_i]`` RGB in ``[0, 1]`` (already
    resized), ``targets`` list of ``{"boxes": float [N_i, 4] xyxy px, "labels": int64 [N_i] in 1..K-1, "masks": uint8
    [N_i, H_i, W_i]`` (Mask R-CNN)``}`` -> torchvision's loss dict (``loss_objectness``, ``loss_rpn_box_reg``,
    ``loss_classifier``, ``loss_box_reg``, ``loss_mask``; cascade: plus the per-stage parts). Eval mode:
    ``model(images)`` -> per image ``{"boxes" [D, 4] xyxy px of the input image, "scores" [D], "labels" [D],
    "masks" float [D, 1, H, W] (Mask R-CNN, probabilities)}``.

    Raises:
        ValueError: a backbone whose pyramid has another number of levels than ``cfg.anchor_sizes``.
    """
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.transform import GeneralizedRCNNTransform
    from torchvision.ops import MultiScaleRoIAlign

    cfg = cfg or DetectorConfig()
    if backbone.neck.num_outs != len(cfg.anchor_sizes):
        raise ValueError(f"the HRFPN has {backbone.neck.num_outs} levels but {len(cfg.anchor_sizes)} anchor sizes "
                         f"are given ({cfg.anchor_sizes})")
    anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), (tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes))
    roi_levels = [str(i) for i in range(min(4, backbone.neck.num_outs))]  # strides 4..32
    box_pool = MultiScaleRoIAlign(roi_levels, output_size=7, sampling_ratio=2)
    common = dict(
        rpn_anchor_generator=anchors, box_roi_pool=box_pool, min_size=cfg.min_size, max_size=cfg.max_size,
        image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train, rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_nms_thresh=cfg.rpn_nms_thresh, rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image, rpn_positive_fraction=cfg.rpn_positive_fraction,
        box_score_thresh=cfg.box_score_thresh, box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.box_detections_per_img, box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5,
        box_batch_size_per_image=cfg.box_batch_size_per_image, box_positive_fraction=cfg.box_positive_fraction,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        box_head=TwoMLPHead(backbone.out_channels * 7 ** 2, cfg.representation_size),
        box_predictor=FastRCNNPredictor(cfg.representation_size, cfg.num_classes))
    if cfg.detector == "mask_rcnn":
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

        c = backbone.out_channels
        model = MaskRCNN(backbone, num_classes=None,
                         mask_roi_pool=MultiScaleRoIAlign(roi_levels, output_size=14, sampling_ratio=2),
                         mask_head=MaskRCNNHeads(c, [256] * 4, 1),
                         mask_predictor=MaskRCNNPredictor(256, 256, cfg.num_classes), **common)
    else:
        model = FasterRCNN(backbone, num_classes=None, **common)
        if cfg.detector == "cascade_rcnn":
            model.roi_heads = _cascade_heads(cfg, box_pool, 7, backbone.out_channels)
    # training images come resized by the data pipeline (seeded multi-scale); test images are resized here
    model.transform = GeneralizedRCNNTransform(cfg.min_size, cfg.max_size, list(IMAGE_MEAN), list(IMAGE_STD),
                                               _skip_resize=True)
    model.detector_config = cfg
    return model


def _freeze_bn_statistics(module: nn.Module, args) -> None:
    """Forward pre-hook: BatchNorm layers inside ``module`` run in eval mode while ``module`` trains."""
    if module.training:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def set_norm_eval(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Keep the backbone's BatchNorm layers in eval mode in training (frozen running statistics, affine weights still
    trained): DET's ``norm_eval=True`` for ImageNet-initialised backbones trained with 2 images per GPU. Implemented
    as a forward pre-hook on ``model.backbone`` (survives ``deepcopy`` and pickling). Returns ``model``."""
    if enabled:
        model.backbone.register_forward_pre_hook(_freeze_bn_statistics)
    return model


def raw_detections(model, images: Sequence[Any]) -> list[dict[str, Any]]:
    """The detector's forward without torchvision's post-processing (eval mode, no gradients by the caller):
    ``images`` list of float ``[3, h, w]`` in ``[0, 1]`` already at their test size -> per image ``boxes`` ``[D, 4]``
    px of that image, ``scores``, ``labels`` and, for Mask R-CNN, ``masks`` float ``[D, 1, 28, 28]`` probabilities
    (not pasted: :func:`~hrnet_core.evaluation.coco_detection.paste_masks_mmdet` pastes them the official way).
    The test size comes from :func:`~hrnet_core.data.det_transforms.resize_for_test`.

    Raises:
        RuntimeError: the detector's own transform changed an image size (the test size must be final).
    """
    from collections import OrderedDict

    image_list, _ = model.transform(list(images))
    if [tuple(int(v) for v in x.shape[-2:]) for x in images] != [tuple(s) for s in image_list.image_sizes]:
        raise RuntimeError(f"the detector resized its test images {[tuple(x.shape[-2:]) for x in images]} to "
                           f"{image_list.image_sizes}; resize_for_test must give the final size")
    features = model.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = model.rpn(image_list, features)
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    return detections
