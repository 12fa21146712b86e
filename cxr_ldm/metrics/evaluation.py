"""The evaluation run behind ``python -m cxr_ldm.evaluate``: inputs checked first, then one metric at a time.

Options are checked before anything slow happens (missing inputs, missing or random torchxrayvision
weights), generated images are sampled into ``out_dir/samples`` through the pipeline and then read
back like any folder, and ``metrics.json`` is rewritten after every metric, so a long run that fails late
keeps what it measured.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from cxr_ldm.metrics.adherence import (
    AdherenceJudge,
    PhantomJudge,
    XRVJudge,
    expected_matrix,
    score_against_labels,
)
from cxr_ldm.metrics.feature_cache import FeatureCache
from cxr_ldm.metrics.features import FEATURE_PROTOCOL, XRV_WEIGHTS, XRVFeatureExtractor, extract_features
from cxr_ldm.metrics.fid import fid_from_features, kid_from_features
from cxr_ldm.metrics.memorization import memorization_report
from cxr_ldm.metrics.msssim import ms_ssim_per_image, pairwise_ms_ssim, psnr_per_image
from cxr_ldm.metrics.report import format_table
from cxr_ldm.metrics.sources import (
    ImageSet,
    folder_set,
    image_batches,
    native_size,
    report_excerpts,
    split_set,
)
from cxr_ldm.models.autoencoder import ms_ssim_settings
from cxr_ldm.models.components import ModelLoadError
from cxr_ldm.models.loading import existing_path, model_kind, read_components
from cxr_ldm.pipelines import CXRLDMPipeline
from cxr_ldm.pipelines.prompts import PromptError, collect_prompts
from cxr_ldm.pipelines.sample_folder import SAMPLES_FILE, sample_to_folder
from cxr_ldm.pipelines.settings import SamplingSettings
from cxr_ldm.utils.devices import resolve_device

log = logging.getLogger(__name__)

METRICS = ("recon", "diversity", "fid", "kid", "adherence", "memorization")
NEEDS_GENERATED = frozenset({"diversity", "fid", "kid", "adherence", "memorization"})
NEEDS_REAL = frozenset({"recon", "diversity", "fid", "kid", "memorization"})
NEEDS_XRV = frozenset({"fid", "kid", "memorization"})
METRICS_FILE = "metrics.json"
XRV_FEATURES_NAME = (
    f"torchxrayvision DenseNet-121 {XRV_WEIGHTS} features2 (1024-d): 1 channel, 224 px, [-1024, 1024]"
)


class EvaluationError(ValueError):
    """A user error in the evaluation options; reported in one line, without a traceback."""


def _opt(cfg: DictConfig, key: str, default: Any = None) -> Any:
    value = OmegaConf.select(cfg, key, default=default)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _path(value: Any) -> Path | None:
    return Path(str(value)).expanduser() if value not in (None, "") else None


class Evaluation:
    """One configured evaluation; :meth:`run` computes the metrics and returns (and writes) them."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.names = self._metric_names()
        self.out_dir = Path(str(cfg.out_dir)).expanduser()
        try:
            self.device = resolve_device(str(_opt(cfg, "device", "auto")))
            self.sampling = SamplingSettings.from_config(_opt(cfg, "sampling"))
        except ValueError as err:
            raise EvaluationError(str(err)) from err
        self.progress = bool(_opt(cfg, "progress", True))
        self.seed = int(_opt(cfg, "seed", 0))
        self.batch_size = int(_opt(cfg, "batch_size", 32))
        self.num_workers = int(_opt(cfg, "num_workers", 0))
        self.cache_dir = _path(_opt(cfg, "cache_dir"))
        self.cache = FeatureCache(self.cache_dir / "features" if self.cache_dir else None)
        self.data_dir = _path(_opt(cfg, "data_dir"))
        # model= (a checkpoint, an exported folder or the MONAI bundle); ldm_ckpt= is its older name
        self.model_path = _path(_opt(cfg, "model") or _opt(cfg, "ldm_ckpt"))
        self.fake_dir = _path(_opt(cfg, "fake_dir"))
        self.real = self._real_set()
        self.texts = self._text_set()
        self.judge_kind = self._judge_kind()
        self._check_inputs()
        self.extractor: XRVFeatureExtractor | None = None
        if NEEDS_XRV & set(self.names) or ("adherence" in self.names and self.judge_kind == "xrv"):
            self.extractor = XRVFeatureExtractor.load(
                _opt(cfg, "xrv_weights"), bool(_opt(cfg, "allow_random_xrv", False))
            )
            self.extractor.to(self.device)
        self.inception = self._inception()  # before any sampling: a missing weights file fails fast
        self.fake: ImageSet | None = None
        self.samples: dict[str, Any] = {}
        self.image_size = 0
        self.metrics: dict[str, Any] = {}
        self._memo: dict[str, tuple[np.ndarray, str]] = {}
        self._real_eval: ImageSet | None = None

    # ------------------------------------------------------------------------------------------ checks
    def _metric_names(self) -> list[str]:
        names = _opt(self.cfg, "metrics", [])
        names = [names] if isinstance(names, str) else list(names or [])
        unknown = [n for n in names if n not in METRICS]
        if unknown or not names:
            raise EvaluationError(f"metrics= must list some of {', '.join(METRICS)}; got {names}")
        return list(dict.fromkeys(names))

    def _real_set(self) -> ImageSet | None:
        real_dir = _path(_opt(self.cfg, "real_dir"))
        try:
            if real_dir is not None:
                return folder_set(real_dir, name=f"real_dir {real_dir}")
            if self.data_dir is not None:
                return split_set(
                    self.data_dir, str(_opt(self.cfg, "split", "test")), _opt(self.cfg, "phantom_raw_dir")
                )
        except (FileNotFoundError, ValueError) as err:
            raise EvaluationError(str(err)) from err
        return None

    def _text_set(self) -> ImageSet | None:
        """Where report-excerpt prompts come from: data_dir's split (even when real_dir gives the images)."""
        if self.data_dir is None or (self.real is not None and self.real.sentences is not None):
            return self.real
        try:
            return split_set(
                self.data_dir, str(_opt(self.cfg, "split", "test")), _opt(self.cfg, "phantom_raw_dir")
            )
        except (FileNotFoundError, ValueError) as err:
            raise EvaluationError(str(err)) from err

    def _judge_kind(self) -> str:
        kind = str(_opt(self.cfg, "adherence.classifier", "auto"))
        if kind not in ("auto", "phantom", "xrv"):
            raise EvaluationError(f"adherence.classifier must be auto, phantom or xrv, got {kind!r}")
        if kind == "auto":
            kind = "phantom" if self.real is not None and self.real.truth is not None else "xrv"
        return kind

    def _check_inputs(self) -> None:
        names = set(self.names)
        wanted = sorted(names & NEEDS_GENERATED, key=self.names.index)
        if wanted and not (self.model_path or self.fake_dir):
            raise EvaluationError(
                f"{', '.join(wanted)} need generated images: give model=PATH (an ldm.ckpt, an exported folder or "
                "the MONAI bundle; samples are generated first) or fake_dir=FOLDER"
            )
        if self.model_path and self.fake_dir:
            raise EvaluationError("give either model= (sample now) or fake_dir= (already generated), not both")
        wanted = sorted(names & NEEDS_REAL, key=self.names.index)
        if wanted and self.real is None:
            raise EvaluationError(
                f"{', '.join(wanted)} need real images: give data_dir=PREPARED_DIR or real_dir=FOLDER"
            )
        if "recon" in names and not (_opt(self.cfg, "ae_ckpt") or self.model_path):
            raise EvaluationError("recon needs a stage-1 checkpoint: give ae_ckpt=STAGE1.ckpt (or model=)")
        if "memorization" in names and not (self.data_dir or _opt(self.cfg, "train_dir")):
            raise EvaluationError(
                "memorization needs training images: give data_dir= (its train split) or train_dir="
            )
        if "memorization" in names:
            train_dir = _path(_opt(self.cfg, "train_dir"))
            train_csv = (
                self.data_dir / f"{_opt(self.cfg, 'train_split', 'train')}.csv" if self.data_dir else None
            )
            if train_dir is not None and not train_dir.is_dir():
                raise EvaluationError(f"train_dir={str(train_dir)!r} is not a folder")
            if train_dir is None and not train_csv.is_file():
                raise EvaluationError(
                    f"memorization: {train_csv} not found (train_split= names the training split)"
                )
        if (
            "adherence" in names
            and self.fake_dir is not None
            and not (self.fake_dir / SAMPLES_FILE).is_file()
        ):
            raise EvaluationError(
                f"adherence needs each generated image's prompt: {self.fake_dir} has no {SAMPLES_FILE} "
                "(written by cxr_ldm.sample and cxr_ldm.evaluate)"
            )
        ae_ckpt = _path(_opt(self.cfg, "ae_ckpt"))
        if ae_ckpt is not None and not ae_ckpt.is_file():
            raise EvaluationError(f"ae_ckpt={str(ae_ckpt)!r} does not exist")
        if self.model_path is not None:
            try:
                model_kind(existing_path(self.model_path))
            except ModelLoadError as err:
                raise EvaluationError(str(err)) from err
        if self.model_path and NEEDS_GENERATED & names and not self._has_prompt_list():
            if self.texts is None or self.texts.sentences is None:
                raise EvaluationError(
                    "sampling needs prompts: give sampling.prompts=[...] or sampling.prompts_file=FILE, or "
                    "data_dir= to draw them from the split's reports"
                )

    def _has_prompt_list(self) -> bool:
        return bool(_opt(self.cfg, "sampling.prompts")) or bool(_opt(self.cfg, "sampling.prompts_file"))

    # ------------------------------------------------------------------------------------------ inputs
    @property
    def real_eval(self) -> ImageSet:
        """The real images of fid / kid / adherence / memorization: ``n_real`` drawn by ``seed``."""
        if self._real_eval is None:
            assert self.real is not None
            self._real_eval = self.real.sample(_opt(self.cfg, "n_real"), self.seed)
        return self._real_eval

    def _prompts(self, n: int) -> tuple[list[str], str]:
        if self._has_prompt_list():
            try:
                listed = collect_prompts(
                    _opt(self.cfg, "sampling.prompts"), _opt(self.cfg, "sampling.prompts_file"), "sampling.prompts"
                )
            except PromptError as err:
                raise EvaluationError(str(err)) from err
            return [listed[k % len(listed)] for k in range(n)], f"list of {len(listed)} prompts, cycled"
        assert self.texts is not None
        excerpts = report_excerpts(self.texts, seed=self.seed)
        order = np.random.default_rng(self.seed).permutation(len(excerpts))
        return [excerpts[order[k % len(order)]] for k in range(n)], f"report excerpts of {self.texts.name}"

    def _generated_set(self) -> ImageSet:
        if self.fake_dir is not None:
            try:
                fake = folder_set(self.fake_dir, name=f"fake_dir {self.fake_dir}")
            except FileNotFoundError as err:
                raise EvaluationError(str(err)) from err
            self.samples = {"source": "fake_dir", "path": str(self.fake_dir.resolve()), "n": len(fake)}
            if fake.seeds is not None:
                self.samples["seeds"] = {
                    "first": fake.seeds[0],
                    "last": fake.seeds[-1],
                    "n_unique": len(set(fake.seeds)),
                }
            return fake
        n = int(_opt(self.cfg, "sampling.n", 1000))
        prompts, source = self._prompts(n)
        seeds = [self.sampling.seed + k for k in range(n)]
        try:
            pipe = CXRLDMPipeline.load(self.model_path, text_encoder=_opt(self.cfg, "text_encoder")).to(self.device)
        except (ModelLoadError, FileNotFoundError) as err:
            raise EvaluationError(str(err)) from err
        folder = self.out_dir / "samples"
        manifest = sample_to_folder(pipe, prompts, seeds, folder, self.sampling, model=str(self.model_path.resolve()),
                                    progress=self.progress)  # fmt: skip
        del pipe
        self.samples = {
            "source": "model", "model": str(self.model_path.resolve()), "folder": str(folder), "n": n,
            "seed": self.sampling.seed, "prompts": source,
            "seeds": {"first": seeds[0], "last": seeds[-1], "rule": f"image k uses seed {self.sampling.seed} + k"},
            **manifest["settings"],
        }  # fmt: skip
        return folder_set(folder, name="generated")

    def _resolve_image_size(self) -> int:
        size = _opt(self.cfg, "image_size")
        if size:
            return int(size)
        first = self.fake if self.fake is not None else self.real
        assert first is not None
        return native_size(first.paths[0])

    def _batches(self, images: ImageSet):
        return image_batches(images, self.image_size, self.batch_size, self.num_workers)

    def _load_all(self, images: ImageSet, desc: str) -> torch.Tensor:
        """uint8 ``[N, 1, S, S]``: the one place a whole set is held (pairwise MS-SSIM needs it)."""
        out = []
        for batch in tqdm(self._batches(images), desc=desc, unit="batch", disable=not self.progress):
            out.append((batch * 255.0).round().to(torch.uint8))
        return torch.cat(out)

    def _features(self, images: ImageSet, role: str, extractor=None, protocol: str = FEATURE_PROTOCOL):
        """``(features, cache status)``; real and training features go through the on-disk cache."""
        extractor = extractor or self.extractor
        fingerprint = getattr(extractor, "fingerprint", None) or getattr(extractor, "weights_label", "")
        parts = {
            "images": images.identity,
            "image_size": self.image_size,
            "weights": fingerprint,
            "protocol": protocol,
        }
        memo_key = json.dumps(parts, sort_keys=True, default=str)
        if memo_key in self._memo:
            return self._memo[memo_key]

        def compute() -> dict[str, np.ndarray]:
            batches = self._batches(images)
            feats = extract_features(
                extractor, batches, total=len(images), desc=f"features ({role})", progress=self.progress
            )
            return {"features": feats}

        if role == "generated" or self.cache.root is None:
            features, status = (
                compute()["features"],
                "not cached" if role == "generated" else "cache disabled",
            )
        else:
            arrays, hit = self.cache.get_or_compute(f"{role}_features", parts, compute)
            features, status = arrays["features"], "hit" if hit else "miss (stored)"
        self._memo[memo_key] = (features, status)
        return features, status

    # ------------------------------------------------------------------------------------------ metrics
    def _recon(self) -> dict[str, Any]:
        images = self.real.sample(int(_opt(self.cfg, "recon.n", 5000)), self.seed)
        reconstruct, checkpoint = self._autoencoder()
        ms, psnr = [], []
        with torch.no_grad():
            for batch in tqdm(
                self._batches(images), desc="reconstruction", unit="batch", disable=not self.progress
            ):
                x = batch.to(self.device)
                y = reconstruct(x).float().clamp(0.0, 1.0)
                ms.append(ms_ssim_per_image(y, x).cpu())
                psnr.append(psnr_per_image(y, x).cpu())
        ms_t, psnr_t = torch.cat(ms).double(), torch.cat(psnr).double()
        pd.DataFrame({"id": images.ids, "ms_ssim": ms_t.numpy(), "psnr": psnr_t.numpy()}).to_csv(
            self.out_dir / "recon_per_image.csv", index=False
        )
        return {
            "ms_ssim": float(ms_t.mean()), "ms_ssim_std": float(ms_t.std()) if len(ms_t) > 1 else 0.0,
            "psnr": float(psnr_t.mean()), "psnr_std": float(psnr_t.std()) if len(psnr_t) > 1 else 0.0,
            "n": len(images), "images": self.real.name, "checkpoint": checkpoint,
            "image_size": self.image_size,
            "ms_ssim_settings": asdict(ms_ssim_settings(self.image_size)), "per_image": "recon_per_image.csv",
            "reconstruction": "decoded posterior mean, clipped to 0..1",
        }  # fmt: skip

    def _autoencoder(self):
        ae_ckpt = _path(_opt(self.cfg, "ae_ckpt"))
        if ae_ckpt is not None:
            from cxr_ldm.models.autoencoder import AutoencoderKLModule

            module = (
                AutoencoderKLModule.load_from_checkpoint(str(ae_ckpt), map_location="cpu")
                .to(self.device)
                .eval()
            )
            return module.reconstruct, str(ae_ckpt.resolve())
        try:
            autoencoder = read_components(self.model_path, need_text_encoder=False).autoencoder
        except ModelLoadError as err:
            raise EvaluationError(str(err)) from err
        autoencoder = autoencoder.to(self.device).eval()
        return autoencoder.reconstruct, f"{self.model_path.resolve()} (its autoencoder)"

    def _diversity(self) -> dict[str, Any]:
        n = int(_opt(self.cfg, "diversity.n", 1000))
        max_pairs = _opt(self.cfg, "diversity.max_pairs")
        result: dict[str, Any] = {
            "image_size": self.image_size,
            "ms_ssim_settings": asdict(ms_ssim_settings(self.image_size)),
        }
        for role, images in (("generated", self.fake), ("real", self.real)):
            stack = self._load_all(images.sample(n, self.seed), f"loading {role} images")
            res = pairwise_ms_ssim(stack, max_pairs, self.seed, self.batch_size, self.device, self.progress,
                                   desc=f"pairwise MS-SSIM ({role})")  # fmt: skip
            result[role] = asdict(res)
        return result

    def _fid(self) -> dict[str, Any]:
        real, status = self._features(self.real_eval, "real")
        fake, _ = self._features(self.fake, "generated")
        result = {
            "value": fid_from_features(real, fake), "n_real": len(real), "n_generated": len(fake),
            "features": XRV_FEATURES_NAME, "xrv_weights": self.extractor.weights_label,
            "real_features_cache": status, "image_size": self.image_size,
        }  # fmt: skip
        if self.inception is not None:
            from cxr_ldm.metrics.inception import INCEPTION_PROTOCOL

            real_i, status_i = self._features(self.real_eval, "real", self.inception, INCEPTION_PROTOCOL)
            fake_i, _ = self._features(self.fake, "generated", self.inception, INCEPTION_PROTOCOL)
            result["inception"] = {"value": fid_from_features(real_i, fake_i),
                                   "weights": self.inception.weights_label,
                                   "published_weights": self.inception.is_published,
                                   "real_features_cache": status_i}  # fmt: skip
        return result

    def _inception(self):
        """The optional Inception-v3 FID network (``fid.inception=true``), or None."""
        if "fid" not in self.names or not bool(_opt(self.cfg, "fid.inception", False)):
            return None
        from cxr_ldm.metrics.inception import InceptionFeatureExtractor

        try:
            return InceptionFeatureExtractor(_opt(self.cfg, "fid.inception_weights")).to(self.device)
        except (FileNotFoundError, ModuleNotFoundError) as err:
            raise EvaluationError(str(err)) from err

    def _kid(self) -> dict[str, Any]:
        real, status = self._features(self.real_eval, "real")
        fake, _ = self._features(self.fake, "generated")
        kid = kid_from_features(real, fake, int(_opt(self.cfg, "kid.subsets", 100)),
                                int(_opt(self.cfg, "kid.subset_size", 1000)), seed=self.seed)  # fmt: skip
        return {**asdict(kid), "n_real": len(real), "n_generated": len(fake), "features": XRV_FEATURES_NAME,
                "xrv_weights": self.extractor.weights_label, "real_features_cache": status}  # fmt: skip

    def _judge(self) -> tuple[AdherenceJudge, dict[str, Any]]:
        if self.judge_kind == "xrv":
            return XRVJudge(self.extractor), {"xrv_weights": self.extractor.weights_label}
        from cxr_ldm.metrics.phantom_classifier import (
            PhantomClassifierSettings,
            load_or_train_phantom_classifier,
        )

        options = dict(_opt(self.cfg, "adherence.phantom", {}) or {})
        if (
            options.get("raw_size") is None and self.real is not None
        ):  # render as the phantom data were rendered
            options["raw_size"] = self.real.extra.get("raw_size")
        settings = PhantomClassifierSettings(image_size=self.image_size, **options)
        classifier, cached = load_or_train_phantom_classifier(
            settings, self.cache_dir / "classifiers" if self.cache_dir else None, self.progress
        )
        classifier.to(self.device)
        validation = classifier.info["validation"]
        aurocs = [v["auroc"] for v in validation.values() if v["auroc"] == v["auroc"]]
        return PhantomJudge(classifier), {
            "classifier_settings": asdict(settings), "classifier_cached": cached,
            "classifier_validation_mean_auroc": float(np.mean(aurocs)) if aurocs else None,
            "classifier_validation": validation,
        }  # fmt: skip

    def _scores(self, judge: AdherenceJudge, images: ImageSet) -> np.ndarray:
        out = [judge.scores(batch).float().numpy() for batch in self._batches(images)]
        return np.concatenate(out) if out else np.zeros((0, len(judge.concepts)))

    def _adherence(self) -> dict[str, Any]:
        if self.fake.prompts is None:
            raise EvaluationError(
                f"adherence needs the prompt of every generated image: {self.fake.name} has no samples.json"
            )
        judge, info = self._judge()
        expected = expected_matrix(judge, self.fake.prompts)
        rows = np.flatnonzero(~np.isnan(expected).all(axis=1))
        generated: dict[str, Any] = {"n_images": int(len(rows)), "n_generated": len(self.fake)}
        if len(rows):
            generated.update(
                score_against_labels(
                    judge.concepts, self._scores(judge, self.fake.subset(rows)), expected[rows]
                )
            )
        else:
            generated.update({"mean_accuracy": None, "mean_auroc": None, "per_finding": {},
                              "note": "no prompt names a finding the classifier knows"})  # fmt: skip
        real = None
        if self.real is not None:
            labels = None
            if isinstance(judge, PhantomJudge) and self.real_eval.truth is not None:
                labels, source = PhantomJudge.labels_from_truth(self.real_eval.truth), "phantom ground truth"
            elif isinstance(judge, XRVJudge) and self.real_eval.chexpert is not None:
                labels, source = XRVJudge.labels_from_chexpert(self.real_eval.chexpert), "CheXpert labels"
            if labels is not None:
                real = score_against_labels(judge.concepts, self._scores(judge, self.real_eval), labels)
                real.update({"n_images": len(self.real_eval), "labels": source})
        return {"classifier": judge.name, "generated": generated, "real": real, **info}

    def _train_set(self) -> ImageSet:
        train_dir = _path(_opt(self.cfg, "train_dir"))
        try:
            if train_dir is not None:
                train = folder_set(train_dir, name=f"train_dir {train_dir}")
            else:
                train = split_set(
                    self.data_dir,
                    str(_opt(self.cfg, "train_split", "train")),
                    _opt(self.cfg, "phantom_raw_dir"),
                )
        except (FileNotFoundError, ValueError) as err:
            raise EvaluationError(str(err)) from err
        return train.sample(_opt(self.cfg, "memorization.n_train"), self.seed)

    def _memorization(self) -> dict[str, Any]:
        train = self._train_set()
        train_f, status = self._features(train, "train")
        real_f, _ = self._features(self.real_eval, "real")
        fake_f, _ = self._features(self.fake, "generated")
        report = memorization_report(
            fake_f, real_f, train_f, quantile=float(_opt(self.cfg, "memorization.quantile", 0.01)),
            threshold=_opt(self.cfg, "memorization.threshold"),
            max_listed=int(_opt(self.cfg, "memorization.max_listed", 20)),
            generated_ids=self.fake.ids, train_ids=train.ids, generated_prompts=self.fake.prompts,
        )  # fmt: skip
        for item in report["near_copies"]:
            item["generated_image"] = str(self.fake.paths[item["generated"]])
            item["train_image"] = str(train.paths[item["train"]])
        return {**report, "train_images": train.name, "train_features_cache": status,
                "xrv_weights": self.extractor.weights_label}  # fmt: skip

    # ------------------------------------------------------------------------------------------ run
    def _write(self) -> Path:
        settings = {
            "metrics": self.names, "image_size": self.image_size, "seed": self.seed,
            "n_real": _opt(self.cfg, "n_real"),
            "real": self.real.name if self.real is not None else None, "device": str(self.device),
            "xrv_weights": self.extractor.weights_label if self.extractor is not None else None,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }  # fmt: skip
        payload = {**self.metrics, "samples": self.samples or None, "settings": settings}
        path = self.out_dir / METRICS_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
        tmp.replace(path)
        return path

    def run(self) -> dict[str, Any]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if NEEDS_GENERATED & set(self.names):
            self.fake = self._generated_set()
        self.image_size = self._resolve_image_size()
        for name in self.names:
            start = time.perf_counter()
            log.info("computing %s", name)
            result = getattr(self, f"_{name}")()
            result["seconds"] = round(time.perf_counter() - start, 2)
            self.metrics[name] = result
            self._write()
        print(format_table(self.metrics, self.names))
        print(f"wrote {self.out_dir / METRICS_FILE}")
        return self.metrics


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    return Evaluation(cfg).run()
