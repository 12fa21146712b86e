"""Reading a prepared image file the way training sees it (the dataset, the latent cache and the metrics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F


def load_image(path: str | Path, image_size: int) -> torch.Tensor:
    """``[1, image_size, image_size]`` float in 0..1: shorter side resized (antialiased), then center crop."""
    with Image.open(path) as im:
        array = np.asarray(im.convert("L"), dtype=np.uint8)
    image = torch.from_numpy(array.copy()).unsqueeze(0)
    image = F.resize(image, image_size, antialias=True)
    image = F.center_crop(image, [image_size, image_size])
    return image.float().div_(255.0)
