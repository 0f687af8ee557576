"""``hrnet``: the command line of the HRNet reference pipeline.

It sits above both ``pipelines`` (data, training, evaluation, report) and ``sweeps`` (Ray Tune studies) and
assembles their sub-commands; neither of them imports it.
"""

from .main import build_parser, main, root_cause

__all__ = ["main", "build_parser", "root_cause"]
