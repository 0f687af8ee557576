"""Sweep definitions: the YAML schema of ``sweeps/*.yaml``, its validation, and the trial plan.

A sweep file describes one study (a paper table or figure) as plain data::

    name: pose_width_coco                 # must equal the file stem
    description: ...
    recipe: pose_hrnet_w32_256x192_coco   # base recipe (hrnet_core.recipes)
    overrides: {}                         # recipe overrides shared by every trial
    metric: AP                            # reported by the training run (MLflow / Tune metric name)
    mode: max                             # max | min
    paper: {id: hrnet_pose_cvpr2019, table: "1", note: ...}   # table id as in hrnet_core.paper_tables, or "Figure 5"
    search: {algorithm: grid, num_samples: 1, seed: 0}   # grid | random
    variants:                             # a grid axis of named override bundles (the study's rows)
      - {name: W32, overrides: {model.width: 32}, paper: {AP: 74.4}}
    search_space:                         # extra axes over single recipe keys
      train.lr: {loguniform: [1.0e-4, 1.0e-2]}
    scheduler: {type: asha, grace_period: 1, reduction_factor: 2, max_t: 210}   # fifo | asha
    resources: {num_workers: 4, use_gpu: true, cpus_per_worker: 8}   # one GPU per worker with use_gpu
    report: {x: variant}                  # variant | gflops | gmacs | params | <override key>
    smoke:                                # what ``--smoke`` runs instead (tiny, CPU)
      profile: smoke
      variants: {W18: {model.width: 8}, W32: {model.width: 16}}
      resources: {num_workers: 1, use_gpu: false, cpus_per_worker: 0.5}

Every trial's recipe is resolved with :func:`hrnet_core.recipes.load_recipe` while the plan is built, so an unknown
recipe, an unknown override key or a bad value fails before anything is scheduled. All problems of one file are
collected into a single :class:`SweepConfigError` whose message names the file and the key at fault.

Modules: :mod:`sweeps.spec.schema` (the dataclasses: the file as written, the parsed sweep, the plan),
:mod:`sweeps.spec.parse` (YAML -> :class:`SweepSpec`, typed by :mod:`hrnet_core.schema`, then the checks across keys),
:mod:`sweeps.spec.plan` (trial expansion, recipe resolution, cluster fit). Everything public is re-exported here.
"""

from .parse import list_sweeps, load_sweep, parse_sweep, sweep_path
from .plan import build_plan, check_cluster_fit, check_paper_row
from .schema import (
    AXIS_KINDS, REPORT_X, SWEEPS_DIR, Axis, PaperRef, PaperRowRef, ReportSpec, Resources, SchedulerSpec, SearchSpec,
    SmokeSpec, SweepConfigError, SweepFile, SweepPlan, SweepSpec, TrialSpec, Variant, VariantEntry,
)

__all__ = [
    "AXIS_KINDS", "REPORT_X", "SWEEPS_DIR", "Axis", "PaperRef", "PaperRowRef", "ReportSpec", "Resources",
    "SchedulerSpec", "SearchSpec", "SmokeSpec", "SweepConfigError", "SweepFile", "SweepPlan", "SweepSpec", "TrialSpec",
    "Variant", "VariantEntry", "build_plan", "check_cluster_fit", "check_paper_row", "list_sweeps", "load_sweep",
    "parse_sweep", "sweep_path",
]
