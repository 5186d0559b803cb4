"""Batches for training and evaluation: a torch Dataset over a split and the DataLoaders that feed the
loops, decoding images in `workers` background processes when asked to.

The batch order and the flips are drawn in the main process by `SeededBatches` (a fresh permutation per
epoch, one flip draw per image, the last partial batch dropped), so a training is the same however many
loader workers decode for it. Samples cross process boundaries as uint8 tensors (a quarter of float32) and
become float on the training device; on CUDA they are pinned and copied without blocking.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from autoloss.detection.data import Split

Sample = tuple[Tensor, Tensor, Tensor]  # uint8 [3,H,W], float32 boxes [n,4], int64 labels [n]


class SplitSamples(Dataset):
    """dataset[(i, flip)]: image i as uint8 CHW with its boxes and labels, mirrored left-right if `flip`."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, bool]) -> Sample:
        i, flip = key
        # a copy: cached images are read-only and shared, and torch wants memory it may write
        pixels = torch.from_numpy(np.array(self.split.image(i))).permute(2, 0, 1)
        boxes = torch.from_numpy(np.array(self.split.boxes[i], dtype=np.float32)).reshape(-1, 4)
        labels = torch.from_numpy(np.array(self.split.labels[i], dtype=np.int64))
        if flip:
            pixels = pixels.flip(-1)
            width = pixels.shape[-1]
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        return pixels.contiguous(), boxes, labels


class SeededBatches:
    """Endless batches of (index, flip) keys drawn from a generator seeded with `seed`."""

    def __init__(self, n: int, batch_size: int, seed: int, flip_prob: float) -> None:
        self.n, self.size, self.seed, self.flip_prob = n, min(batch_size, n), seed, flip_prob

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        gen = torch.Generator().manual_seed(self.seed)
        while True:
            order = torch.randperm(self.n, generator=gen).tolist()
            for start in range(0, self.n - self.size + 1, self.size):
                flips = torch.rand(self.size, generator=gen)
                yield [
                    (i, bool(f < self.flip_prob))
                    for i, f in zip(order[start : start + self.size], flips, strict=True)
                ]


def _own_generator(seed: int) -> torch.Generator:
    # Without one, every DataLoader iteration draws its workers' base seed from torch's global RNG: the
    # caller's random state would change by evaluating a model.
    return torch.Generator().manual_seed(seed)


def _keep_list(samples: list[Sample]) -> list[Sample]:
    # Images may differ in size (keep-aspect); the detector's transform pads them into a batch.
    return samples


def train_loader(
    split: Split, batch_size: int, seed: int, flip_prob: float, workers: int = 0, device: str = "cpu"
) -> DataLoader:
    """An endless loader of training batches (lists of `Sample`)."""
    return DataLoader(
        SplitSamples(split),
        batch_sampler=SeededBatches(len(split), batch_size, seed, flip_prob),
        num_workers=workers,
        collate_fn=_keep_list,
        pin_memory=device.startswith("cuda"),
        generator=_own_generator(seed),
        # Each worker decodes whole batches; two in flight per worker hide the decode behind a step.
        prefetch_factor=2 if workers else None,
    )


def eval_loader(split: Split, batch_size: int, workers: int = 0, device: str = "cpu") -> DataLoader:
    """The split in order, unflipped, in batches of `batch_size`."""
    keys = [(i, False) for i in range(len(split))]
    batches = [keys[s : s + batch_size] for s in range(0, len(keys), batch_size)]
    return DataLoader(
        SplitSamples(split),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_keep_list,
        pin_memory=device.startswith("cuda"),
        generator=_own_generator(0),
    )


def to_device(
    samples: list[Sample], device: str, with_targets: bool = True
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Float images in [0, 1] on `device`, and their targets."""
    blocking = not device.startswith("cuda")
    images, targets = [], []
    for pixels, boxes, labels in samples:
        images.append(pixels.to(device, non_blocking=not blocking).float().div_(255.0))
        if with_targets:
            targets.append(
                {
                    "boxes": boxes.to(device, non_blocking=not blocking),
                    "labels": labels.to(device, non_blocking=not blocking),
                }
            )
    return images, targets


def batch_of(
    split: Split, indices: list[int], device: str = "cpu"
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Images `indices` of `split`, unflipped, ready for the detector (tests and one-off forwards)."""
    samples = SplitSamples(split)
    return to_device([samples[(i, False)] for i in indices], device)
