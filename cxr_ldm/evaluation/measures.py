"""One function per measure: read its options, hand the right images or features to the pure functions of
``cxr_ldm/metrics/``, and shape what ``metrics.json`` stores under its name. No measure computes anything itself.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cxr_ldm.evaluation.inputs import EvaluationError, option, path_option
from cxr_ldm.evaluation.networks import XRV_FEATURES_NAME
from cxr_ldm.metrics.adherence import (
    AdherenceJudge,
    PhantomJudge,
    XRVJudge,
    expected_matrix,
    load_phantom_judge,
    score_against_labels,
)
from cxr_ldm.metrics.fid import fid_from_features, kid_from_features
from cxr_ldm.metrics.memorization import memorization_report
from cxr_ldm.metrics.msssim import ms_ssim_per_image, pairwise_ms_ssim, psnr_per_image
from cxr_ldm.metrics.sources import ImageSet
from cxr_ldm.models.components import ModelLoadError
from cxr_ldm.models.loading import read_components
from cxr_ldm.models.ms_ssim import ms_ssim_settings

if TYPE_CHECKING:
    from cxr_ldm.evaluation.context import Context


# ---------------------------------------------------------------------------------------------- MS-SSIM
def recon(ctx: Context) -> dict[str, Any]:
    """MS-SSIM / PSNR of the autoencoder's reconstructions of ``recon.n`` real images (per image in a CSV)."""
    images = ctx.real.sample(int(option(ctx.cfg, "recon.n")), ctx.seed)
    reconstruct, checkpoint = _autoencoder(ctx)
    ms, psnr = [], []
    with torch.no_grad():
        for batch in tqdm(ctx.batches(images), desc="reconstruction", unit="batch", disable=not ctx.progress):
            x = batch.to(ctx.device)
            y = reconstruct(x).float().clamp(0.0, 1.0)
            ms.append(ms_ssim_per_image(y, x).cpu())
            psnr.append(psnr_per_image(y, x).cpu())
    ms_t, psnr_t = torch.cat(ms).double(), torch.cat(psnr).double()
    pd.DataFrame({"id": images.ids, "ms_ssim": ms_t.numpy(), "psnr": psnr_t.numpy()}).to_csv(
        ctx.inputs.out_dir / "recon_per_image.csv", index=False
    )
    return {
        "ms_ssim": float(ms_t.mean()), "ms_ssim_std": float(ms_t.std()) if len(ms_t) > 1 else 0.0,
        "psnr": float(psnr_t.mean()), "psnr_std": float(psnr_t.std()) if len(psnr_t) > 1 else 0.0,
        "n": len(images), "images": ctx.real.name, "checkpoint": checkpoint,
        "image_size": ctx.image_size,
        "ms_ssim_settings": asdict(ms_ssim_settings(ctx.image_size)), "per_image": "recon_per_image.csv",
        "reconstruction": "decoded posterior mean, clipped to 0..1",
    }  # fmt: skip


def _autoencoder(ctx: Context):
    ae_ckpt = path_option(ctx.cfg, "ae_ckpt")
    if ae_ckpt is not None:
        from cxr_ldm.models.autoencoder import AutoencoderKLModule

        module = AutoencoderKLModule.load_from_checkpoint(str(ae_ckpt), map_location="cpu").to(ctx.device).eval()
        return module.reconstruct, str(ae_ckpt.resolve())
    model_path = ctx.inputs.model_path
    try:
        autoencoder = read_components(model_path, need_text_encoder=False).autoencoder
    except ModelLoadError as err:
        raise EvaluationError(str(err)) from err
    autoencoder = autoencoder.to(ctx.device).eval()
    return autoencoder.reconstruct, f"{model_path.resolve()} (its autoencoder)"


def diversity(ctx: Context) -> dict[str, Any]:
    """Mean pairwise MS-SSIM of ``diversity.n`` generated images, and of as many real ones (the reference)."""
    n = int(option(ctx.cfg, "diversity.n"))
    max_pairs = option(ctx.cfg, "diversity.max_pairs")
    result: dict[str, Any] = {
        "image_size": ctx.image_size,
        "ms_ssim_settings": asdict(ms_ssim_settings(ctx.image_size)),
    }
    for role, images in (("generated", ctx.generated), ("real", ctx.real)):
        stack = ctx.load_all(images.sample(n, ctx.seed), f"loading {role} images")
        res = pairwise_ms_ssim(stack, max_pairs, ctx.seed, ctx.inputs.batch_size, ctx.device, ctx.progress,
                               desc=f"pairwise MS-SSIM ({role})")  # fmt: skip
        result[role] = asdict(res)
    return result


# ---------------------------------------------------------------------------------------------- DenseNet features
def fid(ctx: Context) -> dict[str, Any]:
    real, status = ctx.features(ctx.real_eval, "real")
    fake, _ = ctx.features(ctx.generated, "generated")
    xrv = ctx.networks.xrv
    result = {
        "value": fid_from_features(real, fake), "n_real": len(real), "n_generated": len(fake),
        "features": XRV_FEATURES_NAME, "xrv_weights": xrv.weights_label,
        "real_features_cache": status, "image_size": ctx.image_size,
    }  # fmt: skip
    if ctx.networks.inception is not None:
        inception = ctx.networks.inception
        real_i, status_i = ctx.features(ctx.real_eval, "real", "inception")
        fake_i, _ = ctx.features(ctx.generated, "generated", "inception")
        result["inception"] = {"value": fid_from_features(real_i, fake_i), "weights": inception.weights_label,
                               "published_weights": inception.is_published,
                               "real_features_cache": status_i}  # fmt: skip
    return result


def kid(ctx: Context) -> dict[str, Any]:
    real, status = ctx.features(ctx.real_eval, "real")
    fake, _ = ctx.features(ctx.generated, "generated")
    result = kid_from_features(real, fake, int(option(ctx.cfg, "kid.subsets")),
                               int(option(ctx.cfg, "kid.subset_size")), seed=ctx.seed)  # fmt: skip
    return {**asdict(result), "n_real": len(real), "n_generated": len(fake), "features": XRV_FEATURES_NAME,
            "xrv_weights": ctx.networks.xrv.weights_label, "real_features_cache": status}  # fmt: skip


def memorization(ctx: Context) -> dict[str, Any]:
    """Nearest training image of each generated image by DenseNet feature distance, against real test images."""
    train = ctx.inputs.train_set(option(ctx.cfg, "memorization.n_train"))
    train_f, status = ctx.features(train, "train")
    real_f, _ = ctx.features(ctx.real_eval, "real")
    fake_f, _ = ctx.features(ctx.generated, "generated")
    fake = ctx.generated
    report = memorization_report(
        fake_f, real_f, train_f, quantile=float(option(ctx.cfg, "memorization.quantile")),
        threshold=option(ctx.cfg, "memorization.threshold"),
        max_listed=int(option(ctx.cfg, "memorization.max_listed")),
        generated_ids=fake.ids, train_ids=train.ids, generated_prompts=fake.prompts,
    )  # fmt: skip
    for item in report["near_copies"]:
        item["generated_image"] = str(fake.paths[item["generated"]])
        item["train_image"] = str(train.paths[item["train"]])
    return {**report, "train_images": train.name, "train_features_cache": status,
            "xrv_weights": ctx.networks.xrv.weights_label}  # fmt: skip


# ---------------------------------------------------------------------------------------------- adherence
def _judge(ctx: Context) -> tuple[AdherenceJudge, dict[str, Any]]:
    if ctx.inputs.judge_kind == "xrv":
        return XRVJudge(ctx.networks.xrv), {"xrv_weights": ctx.networks.xrv.weights_label}
    raw_size = ctx.inputs.real.extra.get("raw_size") if ctx.inputs.real is not None else None
    judge, info = load_phantom_judge(ctx.image_size, option(ctx.cfg, "adherence.phantom"), raw_size,
                                     ctx.inputs.cache_dir, ctx.progress)  # fmt: skip
    judge.classifier.to(ctx.device)
    return judge, info


def _scores(ctx: Context, judge: AdherenceJudge, images: ImageSet) -> np.ndarray:
    out = [judge.scores(batch).float().numpy() for batch in ctx.batches(images)]
    return np.concatenate(out) if out else np.zeros((0, len(judge.concepts)))


def adherence(ctx: Context) -> dict[str, Any]:
    """Does each image show the findings its prompt names (phantom CNN or torchxrayvision's outputs)?"""
    fake = ctx.generated
    if fake.prompts is None:
        raise EvaluationError(
            f"adherence needs the prompt of every generated image: {fake.name} has no samples.json"
        )
    judge, info = _judge(ctx)
    expected = expected_matrix(judge, fake.prompts)
    rows = np.flatnonzero(~np.isnan(expected).all(axis=1))
    generated: dict[str, Any] = {"n_images": int(len(rows)), "n_generated": len(fake)}
    if len(rows):
        generated.update(
            score_against_labels(judge.concepts, _scores(ctx, judge, fake.subset(rows)), expected[rows])
        )
    else:
        generated.update({"mean_accuracy": None, "mean_auroc": None, "per_finding": {},
                          "note": "no prompt names a finding the classifier knows"})  # fmt: skip
    real = None
    if ctx.inputs.real is not None:
        real_eval, labels = ctx.real_eval, None
        if isinstance(judge, PhantomJudge) and real_eval.truth is not None:
            labels, source = PhantomJudge.labels_from_truth(real_eval.truth), "phantom ground truth"
        elif isinstance(judge, XRVJudge) and real_eval.chexpert is not None:
            labels, source = XRVJudge.labels_from_chexpert(real_eval.chexpert), "CheXpert labels"
        if labels is not None:
            real = score_against_labels(judge.concepts, _scores(ctx, judge, real_eval), labels)
            real.update({"n_images": len(real_eval), "labels": source})
    return {"classifier": judge.name, "generated": generated, "real": real, **info}
