"""In-memory training batches shaped like the DataModule's, the same for every side."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from cxr_ldm.data.tokenization import tokenize

TEXTS = ["Large right pleural effusion.", "", "No acute cardiopulmonary process.", "Moderate cardiomegaly.",
         "Left basilar consolidation. Small left effusion.", "Heart size is normal. Lungs are clear."]  # fmt: skip


class Batches(Dataset):
    """In-memory training items shaped like the DataModule's (``image`` or cached ``z_mu``/``z_sigma``)."""

    def __init__(self, n: int, size: int, latents: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        gen = torch.Generator().manual_seed(0)
        axis = torch.linspace(-1, 1, size)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        centres = torch.rand(n, 2, generator=gen) - 0.5
        radius = 0.2 + 0.4 * torch.rand(n, generator=gen)
        blobs = torch.exp(-((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2) / radius[:, None, None] ** 2)
        self.images = (0.2 + 0.7 * blobs + 0.05 * torch.rand(n, size, size, generator=gen)).clamp(0, 1)[:, None]
        self.texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
        self.tokens = tokenize(self.texts)
        self.latents = latents

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"tokens": self.tokens[i], "text": self.texts[i]}
        if self.latents is None:
            item["image"] = self.images[i]
        else:
            item["z_mu"], item["z_sigma"] = self.latents[0][i], self.latents[1][i]
        return item


def loader(dataset: Dataset, batch_size: int, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0,
                      pin_memory=device.type == "cuda")  # fmt: skip

