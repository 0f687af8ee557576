"""Seeded randomness of the training ingest, shared by every task.

Each training sample's augmentation is drawn from :func:`sample_rng` ``(seed, epoch, index)`` and each epoch's
order from :func:`epoch_permutation` ``(seed, epoch)``; :func:`epoch_shard` cuts that order into equal, non-overlapping
per-rank shards. A sample is thus a function of ``(seed, epoch, index)`` only, and which rank sees which sample is a
function of ``(seed, epoch, rank, world_size)`` only: runs are bit-reproducible for a given worker count.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample_rng", "epoch_permutation", "epoch_shard"]


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of one sample: ``numpy.random.default_rng([seed, epoch, index])``.

    Args:
        seed: base seed (recipe ``train.seed``), >= 0.
        epoch: 0-based training epoch, >= 0.
        index: position of the sample in its split (row of ``samples.parquet``), >= 0.

    Raises:
        ValueError: a negative argument (numpy seeds are non-negative).
    """
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def epoch_permutation(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """The sample order of one epoch: a permutation of ``range(num_samples)`` fixed by ``(seed, epoch)``.

    Drawn from its own stream (``SeedSequence([seed, epoch], spawn_key=(1,))``), independent of the per-sample
    augmentation generators of :func:`sample_rng`.

    Returns:
        int64 ``[num_samples]``: ``perm[k]`` is the index of the sample seen k-th in the epoch.
    """
    ss = np.random.SeedSequence([int(seed), int(epoch)], spawn_key=(1,))
    return np.random.default_rng(ss).permutation(int(num_samples)).astype(np.int64, copy=False)


def epoch_shard(seed: int, epoch: int, num_samples: int, rank: int, world_size: int,
                shuffle: bool = True) -> np.ndarray:
    """Sample indices of one rank for one epoch, in the order that rank sees them.

    Rank ``r`` of ``w`` takes every ``w``-th entry of the epoch order starting at ``r`` (``perm[r::w]``), cut to
    ``num_samples // w`` so that every rank gets the same number of samples (DDP needs equal step counts; at most
    ``w - 1`` samples of the epoch are left out, different ones each epoch). One rank gets the whole order.

    Args:
        seed, epoch: as :func:`epoch_permutation`.
        num_samples: samples in the split.
        rank: 0-based rank, ``0 <= rank < world_size``.
        world_size: number of training workers, >= 1.
        shuffle: ``False`` uses the split order instead of the epoch permutation.

    Returns:
        int64 ``[num_samples // world_size]``.

    Raises:
        ValueError: ``rank`` outside ``[0, world_size)``.
    """
    if not 0 <= int(rank) < int(world_size):
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    order = epoch_permutation(seed, epoch, num_samples) if shuffle else np.arange(int(num_samples), dtype=np.int64)
    per_rank = int(num_samples) // int(world_size)
    return order[int(rank)::int(world_size)][:per_rank]
