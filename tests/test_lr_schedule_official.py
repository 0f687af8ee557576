"""``hrnet_core.engine.lr_at`` against independent computations of each official schedule, every epoch / step.

Figures measured with the code before this change (``lr_at`` of commit 01e441a):

- poly (HRNet-Semantic-Segmentation): step ``k`` ran at ``rule(k)``; officially at ``rule(k - 1)`` (the rate is set
  after each step). Cityscapes geometry (2,975 images, 4 x 3 per step, 484 epochs): max |dlr| / lr0 2.33e-5 -> 0
  against the official loop with 247-step epochs; 1.40e-5 remains against its DistributedSampler-padded 248-step
  epochs (the first step of each epoch; our epochs have no padded 248th step, see docs/fidelity/schedules.md).
- HRFormer classification (timm cosine per iteration, warm-up from 1e-6, floor 1e-5): ours was a per-epoch cosine
  to 0 times a warm-up from 5e-7; max |dlr| / lr0 over the 375,300 steps 1.09e-2 -> 0 (float rounding, < 1e-12).
- detection warm-up ratio 0.3333333 -> 1/3 (mmdetection ``warmup_ratio=1.0 / 3``): |dlr| / lr0 3.3e-8 -> 0.
- step schedules of pose / faces / classification: unchanged (decay at the milestone epoch), which is what their
  ``tools/train.py`` do on the PyTorch they name (0.4.1 / 1.0.0: the scheduler constructor reset ``last_epoch``);
  the same code on PyTorch >= 1.1 decays one epoch earlier, now available as ``train.schedule.epoch_offset: 1``
  (old ``lr_at`` had no such variant: epoch 169 of the pose recipe ran at 1e-3 where that run has 1e-4).
"""

from __future__ import annotations

import bisect
import math

import pytest
import torch

from hrnet_core.recipes import ConfigError, load_recipe
from hrnet_core.engine import lr_at, steps_per_epoch


class TorchUpTo10MultiStep:
    """Our model of ``torch.optim.lr_scheduler.MultiStepLR`` as PyTorch 0.4.1 / 1.0.0 behaved: the constructor sets
    the rate of epoch ``last_epoch + 1`` and then puts ``last_epoch`` back to its argument; ``step()`` advances
    ``last_epoch`` by one and sets ``base * gamma ** (number of milestones <= last_epoch)``."""

    def __init__(self, base, milestones, gamma, last_epoch=-1, restored_lr=None):
        self.base, self.milestones, self.gamma = base, sorted(milestones), gamma
        self.lr = self._rate(last_epoch + 1)
        self.last_epoch = last_epoch

    def _rate(self, e):
        return self.base * self.gamma ** bisect.bisect_right(self.milestones, e)

    def step(self):
        self.last_epoch += 1
        self.lr = self._rate(self.last_epoch)


def _torch_multistep(base, milestones, gamma, last_epoch=-1, restored_lr=None):
    """A real (installed, >= 1.1) ``MultiStepLR`` on a one-parameter SGD; on resume the optimiser carries what its
    restored state has: ``initial_lr`` and the rate of the last trained epoch (``restored_lr``)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    if last_epoch != -1:
        opt.param_groups[0]["initial_lr"] = base
        opt.param_groups[0]["lr"] = restored_lr
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma, last_epoch=last_epoch)


def _official_start_of_epoch_rates(recipe, scheduler_factory, begin=0, restored_lr=None):
    """Rates of epochs ``begin ..`` the way pose/face/classification ``tools/train.py`` drive the scheduler: built with
    ``last_epoch = begin - 1`` (faces / classification; pose: -1 when not resuming), ``step()`` at each epoch's
    start, the epoch trains at the rate that leaves."""
    s, lr = recipe.train.schedule, recipe.train.optimizer.lr
    sched = scheduler_factory(lr, s.milestones, s.gamma, begin - 1, restored_lr)
    out = []
    for _ in range(begin, recipe.train.epochs):
        sched.step()
        out.append(sched.lr)
    return out


class _Real:
    """Adapter so the driver above can run a real torch scheduler."""

    def __init__(self, base, milestones, gamma, last_epoch, restored_lr=None):
        self.opt, self.sched = _torch_multistep(base, milestones, gamma, last_epoch, restored_lr)

    def step(self):
        import warnings

        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": the official order
            warnings.simplefilter("ignore")
            self.sched.step()
        self.lr = self.opt.param_groups[0]["lr"]


STEP_RECIPES = [("pose_hrnet_w32_256x192_coco", [169, 199]), ("face_hrnetv2_w18_256x256_wflw", [29, 49]),
                ("cls_hrnet_w18_224x224_imagenet", [29, 59, 89])]


@pytest.mark.parametrize("name,early", STEP_RECIPES)
def test_step_schedules_decay_at_the_milestone_as_trained_on_pytorch_1_0(name, early):
    """Default (``epoch_offset: 0``): every epoch equals the official loop on the PyTorch 0.4.1 / 1.0.0 scheduler
    (unchanged from before); the same loop on a real PyTorch >= 1.1 scheduler differs at the epochs before the
    milestones (``early``), which ``epoch_offset: 1`` reproduces (old ``lr_at`` had no such variant)."""
    r = load_recipe(name)
    ours = [lr_at(r, e, 10**9) for e in range(r.train.epochs)]
    assert ours == pytest.approx(_official_start_of_epoch_rates(r, TorchUpTo10MultiStep), rel=1e-12)
    modern = _official_start_of_epoch_rates(r, _Real)
    differ = [e for e in range(r.train.epochs) if not math.isclose(ours[e], modern[e], rel_tol=1e-9)]
    assert differ == early
    shifted = load_recipe(name, ["train.schedule.epoch_offset=1"])
    assert [lr_at(shifted, e, 10**9) for e in range(r.train.epochs)] == pytest.approx(modern, rel=1e-12)


@pytest.mark.parametrize("name", ["face_hrnetv2_w18_256x256_wflw", "cls_hrnet_w18_224x224_imagenet"])
@pytest.mark.parametrize("begin", [1, 29, 30, 50])
def test_resumed_step_schedule_gets_the_uninterrupted_rates(name, begin):
    """Faces / classification resume with ``MultiStepLR(last_epoch=begin - 1)`` and the restored optimiser. On PyTorch
    1.0 the resumed epochs get the uninterrupted run's rates. On a current PyTorch they do too, except when ``begin``
    is a milestone: the constructor's step lands on it and the recursive ``MultiStepLR`` decays the restored rate a
    second time (10x too low for the rest of the run, an official quirk we do not copy). ``lr_at`` is a function of
    the epoch, so a resumed run here always gets the uninterrupted rates."""
    r = load_recipe(name)
    fresh = _official_start_of_epoch_rates(r, TorchUpTo10MultiStep)
    resumed = _official_start_of_epoch_rates(r, TorchUpTo10MultiStep, begin, restored_lr=fresh[begin - 1])
    assert resumed == pytest.approx(fresh[begin:], rel=1e-12)
    assert [lr_at(r, e, 10**9) for e in range(begin, r.train.epochs)] == pytest.approx(fresh[begin:], rel=1e-12)
    fresh = _official_start_of_epoch_rates(r, _Real)
    resumed = _official_start_of_epoch_rates(r, _Real, begin, restored_lr=fresh[begin - 1])
    quirk = r.train.schedule.gamma if begin in r.train.schedule.milestones else 1.0
    assert resumed == pytest.approx([quirk * v for v in fresh[begin:]], rel=1e-12)
    rr = load_recipe(name, ["train.schedule.epoch_offset=1"])
    assert [lr_at(rr, e, 10**9) for e in range(begin, r.train.epochs)] == pytest.approx(fresh[begin:], rel=1e-12)


def test_bottomup_steps_after_the_epoch():
    """HigherHRNet ``tools/dist_train.py`` (PyTorch >= 1.1): a real ``MultiStepLR`` stepped after each epoch; every
    one of the 300 epochs equals ``lr_at`` (unchanged)."""
    r = load_recipe("pose_higher_hrnet_w32_512x512_coco")
    s = r.train.schedule
    opt, sched = _torch_multistep(r.train.optimizer.lr, s.milestones, s.gamma)
    for e in range(r.train.epochs):
        assert lr_at(r, e, 10**9) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), e
        opt.step()
        sched.step()


def mmcv_step_with_linear_warmup(base, steps, gamma, warmup_iters, ratio, epoch, it):
    """mmcv ``StepLrUpdaterHook`` + linear warm-up, our transcription: the epoch's regular rate ``base *
    gamma ** (number of steps <= epoch)``; while the runner's iteration count ``it < warmup_iters`` the rate is
    ``regular * (1 - (1 - it / warmup_iters) * (1 - ratio))``."""
    regular = base * gamma ** sum(1 for s in steps if epoch >= s)
    if it < warmup_iters:
        return regular * (1 - (1 - it / warmup_iters) * (1 - ratio))
    return regular


@pytest.mark.parametrize("name,official_ratio", [("det_faster_rcnn_hrnetv2p_w32_1333x800_1x_coco", 1.0 / 3),
                                                 ("det_mask_rcnn_hrnetv2p_w18_1333x800_2x_coco", 1.0 / 3),
                                                 ("pose_hrformer_s_256x192_coco", 0.001)])
def test_mmcv_step_schedules_with_warmup(name, official_ratio):
    """Detection (mmdetection v1: warm-up 500 iterations, ratio 1/3, steps at the recipe's epochs) and HRFormer pose
    (mmpose: 500, 0.001, [170, 200]) over every step of a 400-step epoch. Detection's ratio was 0.3333333
    (|dlr| / lr0 3.3e-8 at step 0); now exactly 1/3."""
    r = load_recipe(name)
    s, base, per_epoch = r.train.schedule, r.train.optimizer.lr, 400
    for e in range(r.train.epochs):
        for i in range(per_epoch) if e < 2 else (0, per_epoch - 1):
            k = e * per_epoch + i
            want = mmcv_step_with_linear_warmup(base, s.milestones, s.gamma, 500, official_ratio, e, k)
            assert lr_at(r, e, k) == pytest.approx(want, rel=1e-12, abs=0), (e, i)


def official_poly_rates(base, epochs, epoch_iters, iters_run, power=0.9):
    """HRNet-Semantic-Segmentation, our transcription: the optimiser starts at ``base``; after iteration ``i`` of
    epoch ``ep`` ``adjust_learning_rate`` sets ``base * (1 - (ep * epoch_iters + i) / (epochs * epoch_iters)) **
    power``; an epoch runs ``iters_run`` iterations. Returns the rate of each iteration, keyed ``(ep, i)``."""
    total, lr, out = epochs * epoch_iters, base, {}
    for ep in range(epochs):
        for i in range(iters_run):
            out[(ep, i)] = lr
            lr = base * (1 - (ep * epoch_iters + i) / total) ** power
    return out


def test_poly_rate_is_set_after_each_step():
    """Every step of the Cityscapes geometry (2,975 images, 4 GPUs x 3, 484 epochs of 247 steps) equals the official
    loop with 247-step epochs (old max |dlr| / lr0 2.33e-5, now 0). With the official DistributedSampler padding
    (248 iterations an epoch, ``epoch_iters`` 247) the first step of each epoch keeps a 1.40e-5 residual."""
    r = load_recipe("seg_hrnetv2_w48_512x1024_cityscapes")
    base, epochs = r.train.optimizer.lr, r.train.epochs
    n = steps_per_epoch(2975, 4, 3, 1)
    assert n == int(2975 / 3 / 4) == 247 and math.ceil(2975 / 4) // 3 == 248
    total = epochs * n
    exact = official_poly_rates(base, epochs, n, n)
    padded = official_poly_rates(base, epochs, n, n + 1)
    worst_padded = 0.0
    for ep in range(epochs):
        for i in range(n):
            ours = lr_at(r, ep, ep * n + i, total)
            assert ours == pytest.approx(exact[(ep, i)], rel=1e-13, abs=1e-18), (ep, i)
            worst_padded = max(worst_padded, abs(ours - padded[(ep, i)]) / base)
    assert 1.3e-5 < worst_padded < 1.5e-5


def timm_cosine_rate(t, base, warmup_init, warmup_t, total_t, lr_min):
    """timm ``CosineLRScheduler`` (one cycle, no warm-up prefix), our transcription: linear from ``warmup_init``
    while ``t < warmup_t``, then ``lr_min + (base - lr_min) (1 + cos(pi t / total_t)) / 2``."""
    if t < warmup_t:
        return warmup_init + t * (base - warmup_init) / warmup_t
    return lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * t / total_t))


@pytest.mark.parametrize("variant", ["t", "b"])
def test_hrformer_classification_cosine_per_iteration(variant):
    """HRFormer ``cls/main.py``: lr 5e-4, warm-up 5e-7, min 5e-6 per 512 images scaled to the batch of 1024;
    ``step_update(epoch * n + idx)`` after each optimiser step, so step ``k`` runs at the value for ``k - 1`` (the
    first at the warm-up start). All 300 x 1,251 steps: old max |dlr| / lr0 1.09e-2, now < 1e-12."""
    r = load_recipe(f"cls_hrformer_{variant}_224x224_imagenet")
    n = steps_per_epoch(1281167, 8, 128, 1)
    assert n == 1251
    scale = 1024 / 512
    base, init, floor = 5e-4 * scale, 5e-7 * scale, 5e-6 * scale
    total, warm = 300 * n, 20 * n
    rate = init  # the scheduler's constructor sets the warm-up start
    for k in range(total):
        e = k // n
        assert abs(lr_at(r, e, k, total) - rate) <= 1e-12 * base, k
        rate = timm_cosine_rate(k, base, init, warm, total, floor)


def test_schedule_keys_are_checked():
    with pytest.raises(ConfigError, match="train.schedule.per_iteration"):
        load_recipe("pose_hrnet_w32_256x192_coco", ["train.schedule.per_iteration=true"])
    with pytest.raises(ConfigError, match="train.schedule.min_lr"):
        load_recipe("cls_hrformer_t_224x224_imagenet", ["train.schedule.min_lr=1.0"])
    with pytest.raises(ConfigError, match="train.schedule.epoch_offset"):
        load_recipe("pose_hrnet_w32_256x192_coco", ["train.schedule.epoch_offset=-1"])
    with pytest.raises(ValueError, match="total_steps"):
        lr_at(load_recipe("cls_hrformer_t_224x224_imagenet"), 0, 0)
