"""Batches from the decoded uint8 cache: a Dataset, an epoch-seeded (optionally class-balanced) sampler and
the batch normalisation shared with prediction.

A batch is gathered with one fancy index into the cache (``__getitems__``), augmented per image on uint8, and
moved to the device as uint8 (4x less to copy); ``to_tensor_batch`` normalises the whole batch there at once.
Everything random is a function of (seed, epoch, rank), so a resumed run sees the same batches and
augmentations as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


@contextlib.contextmanager
def one_cpu_thread(device: torch.device):
    """On a CPU, run the enclosed batch ops on one intra-op thread, then restore the count.

    They are small memory-bound ops: one thread runs them faster than a fork/join per op, and much faster when
    the cores are busy (measured 6-20 ms against 60-170 ms per 128x32x32 batch on 2 loaded cores). The model
    keeps every thread; the results do not depend on the thread count. Elsewhere (GPU) it does nothing.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def to_tensor_batch(
    images: np.ndarray | torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
    augment=None,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) numpy/torch -> normalised float (N, 3, H, W) on the input's device.

    ``(x / 255 - mean) / std`` as one multiply-add over the batch. The NHWC -> NCHW permute is a view, so with
    ``channels_last`` no copy is made beyond the float conversion. ``augment`` (a comp.train.batch_augment
    BatchAugment) augments the uint8 batch first, on its device, and returns float NCHW in [0, 255].
    """
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images shaped (N, H, W, 3), got {tuple(x.shape)}")
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=x.device, dtype=dtype)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device, dtype=dtype)
    if augment is not None:
        with one_cpu_thread(x.device):
            x = augment(x).to(dtype).mul_(scale.view(1, 3, 1, 1)).add_(shift.view(1, 3, 1, 1))
            return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x = x.to(dtype).mul_(scale).add_(shift).permute(0, 3, 1, 2)  # NHWC math, then a view as NCHW
    return x if channels_last else x.contiguous()


def _identity(batch):
    return batch


def epoch_seed(seed: int, epoch: int, rank: int = 0, salt: int = 0) -> int:
    """A 31-bit seed for (seed, epoch, rank, salt) that no other combination shares by accident."""
    return int(np.random.SeedSequence([seed, epoch, rank, salt]).generate_state(1)[0] & 0x7FFFFFFF)


class CachedImages(Dataset):
    """Rows ``indices`` of the uint8 cache ``images`` with ``labels``; items are (image, label, row).

    ``labels`` are class indices (n,), or target distributions (n, C) (soft pseudo-labels), kept as float32.

    ``row`` is the position in ``indices`` (the validation row), gathered with the predictions so every id can be
    matched exactly once. ``transform`` is an albumentations Compose (or None), reseeded by ``set_epoch``.
    """

    def __init__(self, images: np.ndarray, indices: Sequence[int], labels: Sequence[int], transform=None,
                 seed: int = 0, rank: int = 0):
        self.images = images
        self.indices = np.asarray(indices, dtype=np.int64)
        labels = np.asarray(labels)
        # class codes stay integers; soft labels and multi-hot targets are real-valued
        self.labels = torch.tensor(labels.astype(np.int64 if labels.dtype.kind in "iub" else np.float32))
        self.transform = transform
        self.seed, self.rank = seed, rank
        self.set_epoch(0)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._seed_transform(0)

    def _seed_transform(self, worker: int) -> None:
        if self.transform is not None:
            self.transform.set_random_seed(epoch_seed(self.seed, self.epoch, self.rank, 1000 + worker))

    def __getitems__(self, rows: list[int]):
        rows_a = np.asarray(rows, dtype=np.int64)
        order = np.argsort(self.indices[rows_a], kind="stable")  # sorted reads are kinder to a memmap
        batch = np.empty((len(rows_a),) + self.images.shape[1:], np.uint8)
        batch[order] = self.images[self.indices[rows_a[order]]]
        if self.transform is not None:
            for i in range(len(batch)):
                batch[i] = self.transform(image=batch[i])["image"]
        return torch.from_numpy(batch), self.labels[rows_a], torch.from_numpy(rows_a)

    def __getitem__(self, row: int):
        img, label, r = self.__getitems__([row])
        return img[0], label[0], r[0]


def worker_init(worker_id: int) -> None:
    """DataLoader workers: no OpenCV threads (they fight the training threads) and their own augment seed."""
    import cv2

    cv2.setNumThreads(0)
    info = torch.utils.data.get_worker_info()
    ds = info.dataset
    if isinstance(ds, CachedImages):
        ds._seed_transform(1 + worker_id)


class EpochSampler(Sampler[int]):
    """A permutation of ``n`` rows per epoch, or with ``weights`` ``n`` draws with replacement (class-balanced).

    Seeded by (seed, epoch) alone, so ``set_epoch(e)`` on a fresh sampler reproduces epoch ``e`` exactly;
    accelerate shards its batches across processes.
    """

    def __init__(self, n: int, seed: int, weights: Sequence[float] | None = None):
        self.n, self.seed, self.epoch = n, seed, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, salt=7))
        if self.weights is None:
            return iter(torch.randperm(self.n, generator=g).tolist())
        return iter(torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist())


def make_loader(dataset: CachedImages, batch_size: int, sampler: Sampler | None = None, num_workers: int = 0,
                drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` that fetches whole batches at once (``__getitems__``)."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
        collate_fn=_identity, drop_last=drop_last, worker_init_fn=worker_init if num_workers else None,
        persistent_workers=False, pin_memory=False,
    )


def steps_per_epoch(n: int, batch_size: int, num_processes: int, drop_last: bool = False) -> int:
    """Batches each process sees per epoch (accelerate gives process r batches r, r+P, ...)."""
    batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    return max(1, math.ceil(batches / num_processes))
