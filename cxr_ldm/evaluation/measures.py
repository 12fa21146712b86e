"""One function per measure: read its options, hand the right images or features to the pure functions of
``cxr_ldm/metrics/``, and shape what ``metrics.json`` stores under its name. No measure computes anything itself.

Every result carries a ``protocol`` block: the network (which output, preprocessing, weights path and hash),
the image counts, the seed that drew the subsets and the generated images' seeds.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cxr_ldm.evaluation.inputs import EvaluationError, option, path_option
from cxr_ldm.evaluation.networks import XRV_FEATURES_NAME, network_protocol
from cxr_ldm.metrics.adherence import (
    AdherenceJudge,
    PhantomJudge,
    XRVJudge,
    expected_matrix,
    load_phantom_judge,
    score_against_labels,
)
from cxr_ldm.metrics.alignment import alignment_summary
from cxr_ldm.metrics.fid import fid_from_features, kid_from_features
from cxr_ldm.metrics.memorization import memorization_report
from cxr_ldm.metrics.msssim import ms_ssim_per_image, pairwise_ms_ssim, psnr_per_image
from cxr_ldm.metrics.per_pathology import labels_from_prompts, labels_of_sources, per_pathology_report
from cxr_ldm.metrics.prdc import prdc_from_features
from cxr_ldm.metrics.reid import reid_report
from cxr_ldm.metrics.sources import ImageSet, report_excerpts
from cxr_ldm.models.components import ModelLoadError
from cxr_ldm.models.loading import read_components
from cxr_ldm.models.ms_ssim import ms_ssim_settings

if TYPE_CHECKING:
    from cxr_ldm.evaluation.context import Context

MS_SSIM_MEASURE = "MS-SSIM (torchmetrics, data range 1) with the size-dependent settings of models/ms_ssim.py"


def _protocol(ctx: Context, kinds: tuple[str, ...] = (), **facts: Any) -> dict[str, Any]:
    """The ``protocol`` block of a result: network(s), counts (``facts``), subset seed and generated seeds."""
    out: dict[str, Any] = {}
    if len(kinds) == 1:
        out.update(network_protocol(ctx.networks, kinds[0]))
    elif kinds:
        out["networks"] = {kind: network_protocol(ctx.networks, kind) for kind in kinds}
    out.update(facts)
    out["seed"] = ctx.seed
    if ctx.samples.get("seeds"):
        out["generated_seeds"] = ctx.samples["seeds"]
    return out


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
        "protocol": _protocol(ctx, measure=MS_SSIM_MEASURE, checkpoint=checkpoint, n_real=len(images)),
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
    result["protocol"] = _protocol(ctx, measure=f"mean pairwise {MS_SSIM_MEASURE}", n_generated=result["generated"]["n_images"],
                                   n_real=result["real"]["n_images"], max_pairs=max_pairs)  # fmt: skip
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
        "protocol": _protocol(ctx, ("xrv",), n_real=len(real), n_generated=len(fake)),
    }  # fmt: skip
    if ctx.networks.inception is not None:
        inception = ctx.networks.inception
        real_i, status_i = ctx.features(ctx.real_eval, "real", "inception")
        fake_i, _ = ctx.features(ctx.generated, "generated", "inception")
        result["inception"] = {"value": fid_from_features(real_i, fake_i), "weights": inception.weights_label,
                               "published_weights": inception.is_published,
                               "real_features_cache": status_i,
                               "protocol": _protocol(ctx, ("inception",), n_real=len(real_i),
                                                     n_generated=len(fake_i))}  # fmt: skip
    return result


def kid(ctx: Context) -> dict[str, Any]:
    real, status = ctx.features(ctx.real_eval, "real")
    fake, _ = ctx.features(ctx.generated, "generated")
    result = kid_from_features(real, fake, int(option(ctx.cfg, "kid.subsets")),
                               int(option(ctx.cfg, "kid.subset_size")), seed=ctx.seed)  # fmt: skip
    return {**asdict(result), "n_real": len(real), "n_generated": len(fake), "features": XRV_FEATURES_NAME,
            "xrv_weights": ctx.networks.xrv.weights_label, "real_features_cache": status,
            "protocol": _protocol(ctx, ("xrv",), n_real=len(real), n_generated=len(fake))}  # fmt: skip


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
            "xrv_weights": ctx.networks.xrv.weights_label,
            "protocol": _protocol(ctx, ("xrv",), n_real=len(real_f), n_generated=len(fake_f),
                                  n_train=len(train_f))}  # fmt: skip


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
    if ctx.inputs.judge_kind == "xrv":
        protocol = _protocol(ctx, ("xrv",), n_generated=len(fake))
    else:
        protocol = _protocol(ctx, classifier=judge.name, weights="trained by the evaluation on rendered phantom "
                             "images (cache_dir/classifiers), keyed by classifier_settings", n_generated=len(fake))
    return {"classifier": judge.name, "generated": generated, "real": real, **info, "protocol": protocol}


# ---------------------------------------------------------------------------------------------- CheXGenBench
def fid_raddino(ctx: Context) -> dict[str, Any]:
    """FID on RAD-DINO's pooled features (CheXGenBench's leaderboard measure)."""
    real, status = ctx.features(ctx.real_eval, "real", "raddino")
    fake, _ = ctx.features(ctx.generated, "generated", "raddino")
    return {"value": fid_from_features(real, fake), "n_real": len(real), "n_generated": len(fake),
            "real_features_cache": status, "image_size": ctx.image_size,
            "protocol": _protocol(ctx, ("raddino",), n_real=len(real), n_generated=len(fake))}  # fmt: skip


def kid_raddino(ctx: Context) -> dict[str, Any]:
    real, status = ctx.features(ctx.real_eval, "real", "raddino")
    fake, _ = ctx.features(ctx.generated, "generated", "raddino")
    result = kid_from_features(real, fake, int(option(ctx.cfg, "kid_raddino.subsets")),
                               int(option(ctx.cfg, "kid_raddino.subset_size")), seed=ctx.seed)  # fmt: skip
    return {**asdict(result), "n_real": len(real), "n_generated": len(fake), "real_features_cache": status,
            "protocol": _protocol(ctx, ("raddino",), n_real=len(real), n_generated=len(fake))}  # fmt: skip


def prdc(ctx: Context) -> dict[str, Any]:
    """Precision, recall, density, coverage (k = ``prdc.nearest_k``) on each feature set of ``prdc.features``."""
    k = int(option(ctx.cfg, "prdc.nearest_k"))
    kinds = tuple(option(ctx.cfg, "prdc.features"))
    out: dict[str, Any] = {}
    for kind in kinds:
        real, status = ctx.features(ctx.real_eval, "real", kind)
        fake, _ = ctx.features(ctx.generated, "generated", kind)
        out[kind] = {**prdc_from_features(real, fake, k), "real_features_cache": status,
                     "protocol": network_protocol(ctx.networks, kind)}  # fmt: skip
    first = out[kinds[0]]
    out["protocol"] = _protocol(ctx, measure="PRDC (Naeem et al. 2020) through the prdc package",
                                features=list(kinds), nearest_k=k, n_real=first["n_real"],
                                n_generated=first["n_fake"])  # fmt: skip
    return out


def alignment(ctx: Context) -> dict[str, Any]:
    """BioViL-T cosine of each generated image (its PNG, read as hi-ml reads it) and its prompt."""
    fake, scorer = ctx.generated, ctx.networks.alignment
    if fake.prompts is None:
        raise EvaluationError(f"alignment needs the prompt of every generated image: {fake.name} has no samples.json")
    step = ctx.inputs.batch_size
    scores = np.concatenate([
        scorer.scores(fake.paths[i : i + step], fake.prompts[i : i + step])
        for i in tqdm(range(0, len(fake), step), desc="alignment", unit="batch", disable=not ctx.progress)
    ])  # fmt: skip
    pd.DataFrame({"id": fake.ids, "prompt": fake.prompts, "score": scores}).to_csv(
        ctx.inputs.out_dir / "alignment_per_image.csv", index=False
    )
    summary = alignment_summary(scores, protocol=_protocol(ctx, ("alignment",), n_generated=len(fake)))
    return {**summary, "per_image": "alignment_per_image.csv"}


def reid(ctx: Context) -> dict[str, Any]:
    """Highest same-patient probability of each generated image over the training images (Siamese ResNet-50);
    the same for the real test images (other patients) as the baseline."""
    net, fake = ctx.networks.reid, ctx.generated
    train = ctx.inputs.train_set(option(ctx.cfg, "reid.n_train"))
    chunk = int(option(ctx.cfg, "reid.chunk"))
    train_f, status = ctx.features(train, "train", "reid")
    fake_f, _ = ctx.features(fake, "generated", "reid")
    gen_max, gen_index = net.max_probability(fake_f, train_f, chunk)
    real_max, n_real = None, 0
    if ctx.inputs.real is not None:
        real_f, _ = ctx.features(ctx.real_eval, "real", "reid")
        real_max, _ = net.max_probability(real_f, train_f, chunk)
        n_real = len(real_f)
    report = reid_report(
        gen_max, gen_index, real_max, threshold=float(option(ctx.cfg, "reid.threshold")),
        max_listed=int(option(ctx.cfg, "reid.max_listed")), generated_ids=fake.ids, train_ids=train.ids,
        generated_prompts=fake.prompts, n_train=len(train),
        protocol=_protocol(ctx, ("reid",), n_generated=len(fake), n_train=len(train), n_real=n_real),
    )  # fmt: skip
    for item in report["most_reidentifiable"]:
        item["generated_image"] = str(fake.paths[item["generated"]])
        item["train_image"] = str(train.paths[item["train"]])
    return {**report, "train_images": train.name, "train_features_cache": status}


def _classify(ctx: Context, images: ImageSet) -> np.ndarray:
    xrv = ctx.networks.xrv
    out = [xrv.classify(batch).float().cpu().numpy() for batch in ctx.batches(images)]
    return np.concatenate(out) if out else np.zeros((0, len(xrv.targets)))


def _generated_labels(ctx: Context) -> tuple[pd.DataFrame, str]:
    """CheXpert labels per generated image: its prompt's source study, else CheXGenBench's prompt matching."""
    texts, fake = ctx.inputs.texts, ctx.generated
    if ctx.prompt_sources is not None and texts is not None:
        return labels_of_sources(texts.chexpert, ctx.prompt_sources), f"the study of {texts.name} each prompt came from"
    if fake.prompts is None or texts is None:
        raise EvaluationError(
            f"per_pathology needs each generated image's prompt and its study: {fake.name} has no samples.json"
        )
    excerpts = report_excerpts(texts, seed=ctx.seed)
    how = (f"prompt text matched to the report excerpts of {texts.name} (seed {ctx.seed}), CheXGenBench's rule; "
           "prompts matching none are labelled from their text by the report labeler")  # fmt: skip
    return labels_from_prompts(fake.prompts, excerpts, texts.chexpert), how


def per_pathology(ctx: Context) -> dict[str, Any]:
    """FID (DenseNet features) and torchxrayvision adherence per CheXpert label, on the positive studies."""
    real, fake, xrv = ctx.real_eval, ctx.generated, ctx.networks.xrv
    generated_labels, how = _generated_labels(ctx)
    real_f, status = ctx.features(real, "real")
    fake_f, _ = ctx.features(fake, "generated")
    report = per_pathology_report(
        real.chexpert, generated_labels, real_f, fake_f, _classify(ctx, real), _classify(ctx, fake),
        score_names=xrv.targets, min_images=int(option(ctx.cfg, "per_pathology.min_images")),
        protocol=_protocol(ctx, ("xrv",), n_real=len(real), n_generated=len(fake)),
    )  # fmt: skip
    return {**report, "generated_labels": how, "real_features_cache": status}
