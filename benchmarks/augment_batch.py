"""Batched augmentation on the device: comp.train.batch_augment against kornia and torchvision.transforms.v2.

    python benchmarks/augment_batch.py [--batch 128] [--sizes 32,224] [--repeats 30]

Each row times one training batch (uint8 NHWC on the device -> augmented float NCHW) for the light and medium
recipes (flip, affine; medium adds rotation and brightness/contrast):

- comp: comp.batch_augment.BatchAugment (per-sample parameters, one grid_sample per batch, own generator);
- kornia: kornia.augmentation with the same ranges (per-sample parameters, global RNG);
- tv2 batch: torchvision.transforms.v2 on the whole batch (ONE parameter set for all samples: not the same
  augmentation, shown for its cost);
- tv2 per image: torchvision.transforms.v2 looped over the samples (per-sample parameters).

kornia and torchvision are optional here (pip install kornia); a missing one is skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timeit(fn, repeats: int) -> float:
    """Median milliseconds per call."""
    fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)


def candidates(preset: str, dev):
    from comp.train.batch_augment import SPECS, BatchAugment

    s = SPECS[preset]
    comp_aug = BatchAugment(preset, seed=0)
    comp_aug.set_epoch(0)
    yield "comp", lambda u8: comp_aug(u8)
    try:
        import kornia.augmentation as K

        ops = [K.RandomHorizontalFlip(p=s.hflip),
               K.RandomAffine(degrees=s.rotate, translate=(s.translate, s.translate), scale=s.scale, p=s.p_affine)]
        if s.p_color:
            ops.append(K.ColorJitter(brightness=s.brightness, contrast=s.contrast, p=s.p_color))
        k = K.AugmentationSequential(*ops).to(dev)
        yield "kornia", lambda u8: k(u8.permute(0, 3, 1, 2).float() / 255) * 255
    except ImportError:
        pass
    try:
        from torchvision.transforms import v2

        ops = [v2.RandomHorizontalFlip(p=s.hflip),
               v2.RandomApply([v2.RandomAffine(degrees=s.rotate, translate=(s.translate, s.translate),
                                               scale=s.scale)], p=s.p_affine)]
        if s.p_color:
            ops.append(v2.RandomApply([v2.ColorJitter(brightness=s.brightness, contrast=s.contrast)], p=s.p_color))
        t = v2.Compose(ops)
        yield "tv2 batch (1 param set)", lambda u8: t(u8.permute(0, 3, 1, 2)).float()
        yield "tv2 per image", lambda u8: torch.stack([t(img) for img in u8.permute(0, 3, 1, 2)]).float()
    except ImportError:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--sizes", default="32,224")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads; median ms per batch of {args.batch}")
    for size in map(int, args.sizes.split(",")):
        u8 = torch.randint(0, 256, (args.batch, size, size, 3), dtype=torch.uint8, device=dev)
        for preset in ("light", "medium"):
            row = {name: timeit(lambda f=f, u8=u8: f(u8), args.repeats) for name, f in candidates(preset, dev)}
            print(f"{size:4d}px {preset:7s} " + "  ".join(f"{k}: {v:.2f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
