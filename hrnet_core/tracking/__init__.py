"""Multi-person pose tracking in video (HRNet pose paper Sec. 4.3, the simple-baseline "FlowTrack" scheme):
optical flow between frames (:mod:`.flow`), box propagation and pose association (:mod:`.association`), and the
per-sequence tracker that joins them with a top-down pose estimator (:mod:`.tracker`). Plain NumPy / OpenCV."""

from .association import greedy_match, pose_similarity
from .flow import FLOW_METHODS, optical_flow, warp_points
from .tracker import TrackerConfig, track_sequence

__all__ = ["FLOW_METHODS", "optical_flow", "warp_points", "pose_similarity", "greedy_match", "TrackerConfig",
           "track_sequence"]
