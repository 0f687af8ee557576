"""Training targets <-> predictions. ``heatmap``: Gaussian heatmap codec, flip test, heatmap -> image coordinates."""

from .heatmap import HeatmapCodec, flip_back, flip_test, heatmaps_to_image_coords

__all__ = ["HeatmapCodec", "flip_back", "flip_test", "heatmaps_to_image_coords"]
