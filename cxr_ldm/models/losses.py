"""Loss pieces of the stage-1 autoencoder that MONAI does not ship as such.

The adversarial criterion itself is MONAI's ``PatchAdversarialLoss``; this module holds the KL term of the
reference and the schedule that switches the adversarial terms on.
"""

from __future__ import annotations

import torch
from monai.losses import PatchAdversarialLoss


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over channels and space, averaged over the batch.

    This is the reference's scaling (a sum per image, not a per-element mean), which is why its weight is as
    small as 1e-8. Computed in float32 so that it stays finite under 16-bit autocast.
    """
    mu, sigma = z_mu.float(), z_sigma.float()
    variance = sigma.pow(2)
    per_image = 0.5 * torch.sum(
        mu.pow(2) + variance - torch.log(variance) - 1.0, dim=tuple(range(1, mu.ndim))
    )
    return per_image.mean()


def adversarial_factor(epoch: int, start: int, warmup_epochs: int = 0) -> float:
    """Weight multiplier of the adversarial terms in ``epoch`` (0-based).

    0 before ``start`` (as the reference: on from epoch ``start`` inclusive); with ``warmup_epochs == 0`` a
    step to 1, otherwise a linear ramp that reaches 1 after ``warmup_epochs`` epochs: ``(epoch - start + 1) /
    warmup_epochs``.
    """
    if start < 0 or warmup_epochs < 0:
        raise ValueError(f"adv_start and adv_warmup_epochs must be >= 0, got {start} and {warmup_epochs}")
    if epoch < start:
        return 0.0
    if warmup_epochs == 0:
        return 1.0
    return min(1.0, (epoch - start + 1) / warmup_epochs)


def least_squares_adversarial_loss() -> PatchAdversarialLoss:
    """Least-squares GAN criterion on raw discriminator logits, as the reference configures it."""
    return PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)
