"""The PyTorch training set over WIDER FACE images and the collate for variable face counts."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import IfqError
from ..imageio import read_image
from .augment import AugmentConfig, Augmenter, letterbox_sample, mosaic, sample_rng
from .wider import WiderImage


def xyxy_to_cxcywh(boxes: np.ndarray, size: int) -> np.ndarray:
    """float (N, 4) x1 y1 x2 y2 in canvas pixels -> float32 (N, 4) cx cy w h as fractions of `size`."""
    cxcy = (boxes[:, :2] + boxes[:, 2:]) / (2 * size)
    wh = (boxes[:, 2:] - boxes[:, :2]) / size
    return np.concatenate([cxcy, wh], axis=1).astype(np.float32).reshape(-1, 4)


class WiderTrainSet(Dataset):
    """WIDER images as (uint8 (3, S, S) BGR tensor, float32 (N, 4) cx cy w h in [0, 1] of the S x S input).

    With `augment`, sample i of epoch e is a pure function of (seed, e, i), whichever worker makes it.
    DataLoader workers hold a copy of the set: call `set_epoch` before iterating each epoch and do
    not use persistent workers, or the workers keep the old epoch.
    """

    def __init__(self, items: list[WiderImage], img_size: int, augment: bool = True, seed: int = 0,
                 config: AugmentConfig = AugmentConfig()):
        self.items = list(items)
        self.img_size = img_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.config = config
        self.augmenter = Augmenter(config) if augment else None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random views __getitem__ returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def view(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The augmented view of image i: (uint8 (S, S, 3), float32 (N, 4) x1 y1 x2 y2 canvas px); with
        probability mosaic_p a 2x2 mosaic of half-size views of image i and three random others."""
        # no draw without mosaics: the views of runs made before mosaics repeat
        if self.config.mosaic_p > 0 and rng.random() < self.config.mosaic_p:
            picks = [i, *rng.integers(len(self.items), size=3)]
            return mosaic([self.augmenter(read_image(self.items[k].path), self.items[k].boxes,
                                          self.img_size // 2, rng)[:2] for k in picks])
        item = self.items[i]
        return self.augmenter(read_image(item.path), item.boxes, self.img_size, rng)[:2]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | IfqError:
        """(uint8 (3, S, S) BGR, float32 (N, 4) cx cy w h normalised), or the ImageError of an unreadable
        image as the sample: a DataLoader worker would re-raise it with its traceback as the message,
        so the error object itself travels to the main process, where `collate`'s caller raises it."""
        try:
            if self.augmenter is None:
                item = self.items[i]
                canvas, boxes, _ = letterbox_sample(read_image(item.path), item.boxes, self.img_size, self.config)
            else:
                canvas, boxes = self.view(i, sample_rng(self.seed, self.epoch, i))
        except IfqError as e:
            return e
        chw = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))   # (3, S, S)
        return chw, torch.from_numpy(xyxy_to_cxcywh(boxes, self.img_size))


def collate(batch: list[tuple[torch.Tensor, torch.Tensor] | IfqError]) -> tuple[torch.Tensor, torch.Tensor] | IfqError:
    """[(uint8 (3, S, S), float32 (N_b, 4))] -> (uint8 (B, 3, S, S), float32 (M, 5) rows [b, cx, cy, w, h]);
    the first failed sample's error instead, for the training loop to raise."""
    failed = next((s for s in batch if isinstance(s, IfqError)), None)
    if failed is not None:
        return failed
    images = torch.stack([image for image, _ in batch])
    rows = [torch.cat([torch.full((len(boxes), 1), float(b)), boxes.float()], dim=1)   # (N_b, 5)
            for b, (_, boxes) in enumerate(batch)]
    targets = torch.cat(rows) if rows else torch.zeros((0, 5))
    return images, targets.reshape(-1, 5).to(torch.float32)
