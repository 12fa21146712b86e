"""Bad input, catalogued: every user error of ``train``, ``prepare`` and ``phantom`` gets the exact message the
table in ``docs/reliability.md`` gives it (one line, no traceback).

The train cases run the command's own function (``cxr_ldm.train._main`` through ``run_command``, as
``python -m cxr_ldm.train`` does) on configs composed by Hydra with the case's overrides; they fail before
training, so they take a second each. A few cases run the real command to show the line and the exit status
end to end. Every message of the table must be one of the cases here, and every case must be in the table.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, command_exit, hydra_context, run_module
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image

from cxr_ldm.utils import resolvers  # noqa: F401
from cxr_ldm.utils.cli import run_command
from cxr_ldm.utils.overrides import check_override_types

pytest_plugins = ["ldm_fixtures"]

DOC = REPO / "docs" / "reliability.md"
SMALL = ["data.phantom.n_studies=60", "data.image_size=32", "data.batch_size=8", "data.phantom.raw_size=64",
         "data.num_workers=0", "print_config=false", "logger=csv"]  # fmt: skip


# ------------------------------------------------------------------------------------------------- harness
def train_error(tmp: Path, overrides: list[str]) -> str:
    """The line ``python -m cxr_ldm.train`` ends with for these overrides (it must end with one)."""
    from cxr_ldm.train import USER_ERRORS, _main

    with hydra_context():  # the command composes again (the override type check)
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=[f"paths.root_dir={tmp}", f"paths.output_dir={tmp}/run", *overrides])  # fmt: skip
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        with pytest.raises(SystemExit) as ended:  # as hydra_command runs it: the override types, then the task
            run_command(check_override_types, cfg)
            run_command(_main, cfg, user_errors=USER_ERRORS)
    message = str(ended.value.code)
    assert "\n" not in message, message
    return message


def _normalise(message: str, tmp: Path) -> str:
    return re.sub(r"\(\d[\d,]* bytes", "(N bytes", message.replace(str(tmp), "<tmp>"))


def documented() -> str:
    return DOC.read_text()


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_ae_ckpt, trained_ldm_ckpt) -> dict[str, Path]:
    """Checkpoint-like files of every wrong kind, written with the libraries that own the formats."""
    root = tmp_path_factory.mktemp("bad_files")
    truncated = root / "truncated.ckpt"
    truncated.write_bytes(tiny_ae_ckpt.read_bytes()[:-200])
    png = root / "image.ckpt"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    plain = root / "weights.pt"
    torch.save(torch.load(tiny_ae_ckpt, map_location="cpu", weights_only=True)["state_dict"], plain)
    return {"truncated": truncated, "png": png, "plain": plain, "ae_other_arch": tiny_ae_ckpt, "ldm": trained_ldm_ckpt}


# ------------------------------------------------------------------------------------------------- train
TRAIN = {  # case id: (overrides, the exact line; <tmp> = the test's folder, {name} = a file of ``files``)
    "missing data folder": (["data=mimic", "data.data_dir=<tmp>/nope"],
        "error: <tmp>/nope/train.csv not found: data_dir must be a folder written by `python -m cxr_ldm.prepare` "
        "(with train.csv, validate.csv, test.csv)."),
    "missing checkpoint": (["ckpt_path=<tmp>/nope.ckpt"],
        "error: ckpt_path=<tmp>/nope.ckpt: no such checkpoint file. Pass an existing .ckpt, or ckpt_path=last with "
        "hydra.run.dir=<the run folder> to resume that run's newest checkpoint."),
    "truncated checkpoint": (["ckpt_path={truncated}"],
        "error: ckpt_path={truncated}: the file is truncated (N bytes, its end is missing: an interrupted copy or "
        "write); use a complete copy, or another checkpoint of the run"),
    "an image as checkpoint": (["ckpt_path={png}"],
        "error: ckpt_path={png}: a PNG image, not a checkpoint written by torch.save"),
    "plain state dict": (["ckpt_path={plain}"],
        "error: ckpt_path={plain}: a plain state dict, not a training checkpoint (no optimizer, step or epoch): "
        "resume needs a .ckpt written by `python -m cxr_ldm.train`"),
    "checkpoint of the other stage": (["ckpt_path={ldm}"],
        "error: ckpt_path={ldm}: a stage-2 (latent diffusion) checkpoint; this run trains AutoencoderKLModule (a "
        "stage-1 (autoencoder) checkpoint): pass a checkpoint of the same stage"),
    "checkpoint of another architecture": (["ckpt_path={ae_other_arch}"],
        "error: ckpt_path={ae_other_arch}: written for another architecture (autoencoder.encoder.blocks.0.conv.weight "
        "is [8, 1, 3, 3] there and [16, 1, 3, 3] here): use the model options of the run that wrote it (its "
        ".hydra/config.yaml)"),
    "no stage-1 checkpoint": (["experiment=ldm_phantom"],
        "error: model: LatentDiffusionModule needs the stage-1 checkpoint: set model.autoencoder_ckpt=AEKL.ckpt, or "
        "model.init_from=DIR (an exported model or the MONAI bundle) to fine-tune from its weights"),
    "missing stage-1 checkpoint": (["experiment=ldm_phantom", "model.autoencoder_ckpt=<tmp>/nope.ckpt"],
        "error: model.autoencoder_ckpt=<tmp>/nope.ckpt: no such file"),
    "truncated stage-1 checkpoint": (["experiment=ldm_phantom", "model.autoencoder_ckpt={truncated}"],
        "error: model.autoencoder_ckpt={truncated}: the file is truncated (N bytes, its end is missing: an "
        "interrupted copy or write); use a complete copy, or another checkpoint of the run"),
    "stage-2 file as stage-1 checkpoint": (["experiment=ldm_phantom", "model.autoencoder_ckpt={ldm}"],
        "error: model.autoencoder_ckpt={ldm}: a stage-2 (latent diffusion) checkpoint, not a stage-1 checkpoint of "
        "cxr_ldm (train one with `python -m cxr_ldm.train experiment=aekl` and pass its checkpoints/last.ckpt)"),
    "size not divisible by the autoencoder": (["data.image_size=30"],
        "error: data.image_size=30 is not divisible by 4, the autoencoder's downsampling factor (3 levels in "
        "model.autoencoder.channels): use a multiple of 4, e.g. 28"),
    "latent not divisible by the UNet": (["experiment=ldm_phantom", "model.autoencoder_ckpt={ae_other_arch}",
                                          "data.image_size=36"],
        "error: data.image_size=36 gives 9x9 latents, not divisible by 4, the UNet's downsampling factor (3 levels "
        "in model.unet.channels): use a multiple of 16"),
    "text encoder does not match the UNet": (["experiment=ldm_phantom", "model.autoencoder_ckpt={ae_other_arch}",
                                              "model.unet.cross_attention_dim=32"],
        "error: model: unet needs with_conditioning=true and cross_attention_dim=64 (the text encoder's width), got "
        "True / 32"),
    "wrong type: a word for a number": (["trainer.max_epochs=abc"],
        "error: trainer.max_epochs=abc: expected an integer, like its default 12"),
    "wrong type: a flag for a mapping": (["data.augment=true"],
        'error: data.augment=true: expected a mapping, like its default {"enabled": false, "hflip": false, "degrees": '
        '5.0, "translate": [0.03, 0.03], "scale": [0.95, 1.05]}'),
    "impossible value: batch size": (["data.batch_size=0"], "error: data.batch_size=0: must be at least 1"),
    "impossible value: probability": (["data.p_uncond=1.5"],
        "error: data.p_uncond=1.5: a probability, between 0 and 1"),
    "impossible value: epochs": (["trainer.max_epochs=-5"],
        "error: trainer: `max_epochs` must be a non-negative integer or -1. You passed in -5."),
    "impossible value: validation interval": (["trainer.check_val_every_n_epoch=0"],
        "error: trainer.check_val_every_n_epoch=0: must be at least 1 (or null with val_check_interval)"),
    "empty prompt list": (["experiment=ldm_phantom", "model.autoencoder_ckpt={ae_other_arch}",
                           "callbacks.sample_grid.prompts=[]"],
        "error: callbacks.sample_grid: SampleGridCallback needs at least one prompt"),
    "unknown NaN action": (["nonfinite.action=ignore"], "error: nonfinite.action must be stop or skip, got 'ignore'"),
    "latent cache on stage 1": (["data.latent_cache=true"],
        "error: data.latent_cache=true caches the latents of a stage-2 model's frozen autoencoder, but this run "
        "trains AutoencoderKLModule: use it with a LatentDiffusionModule (e.g. experiment=ldm), or set "
        "data.latent_cache=false"),
    "impossible value: DDP timeout": (["ddp_timeout_s=0"],
        "error: ddp_timeout_s=0: must be a positive number of seconds (or null: Lightning's default)"),
}  # fmt: skip


def _fill(text: str, tmp: Path, files: dict[str, Path]) -> str:
    text = text.replace("<tmp>", str(tmp))
    return re.sub(r"\{(\w+)\}", lambda m: str(files[m[1]]) if m[1] in files else m[0], text)


@pytest.mark.parametrize("case", list(TRAIN))
def test_train_user_errors(case, tmp_path, files, shared_data_dir):
    overrides, expected = TRAIN[case]
    overrides = [_fill(o, tmp_path, files) for o in overrides]
    if not any(o.startswith("data=mimic") for o in overrides):
        overrides = [f"paths.data_dir={shared_data_dir}", *overrides]
    if "experiment=ldm_phantom" not in overrides and "data=mimic" not in overrides:
        overrides = ["experiment=aekl_phantom", *overrides]
    small = [o for o in SMALL if not o.startswith("data.phantom.")] if "data=mimic" in overrides else SMALL
    message = train_error(tmp_path, [*small, *overrides])
    expected = _fill(expected, tmp_path, files)
    assert _normalise(message, tmp_path) == _normalise(expected, tmp_path)


HYDRA = {  # composition errors: Hydra's message in one line (cxr_ldm/utils/cli.py::hydra_command)
    "unknown option": (["trainer.max_epoch=3"],
        "error: Could not override 'trainer.max_epoch'. To append to your config use +trainer.max_epoch=3 (Key "
        "'max_epoch' is not in struct)"),
    "unknown experiment": (["experiment=nope"],
        "error: In 'train': Could not find 'experiment/nope'. Available options in 'experiment': aekl, aekl_phantom, "
        "ldm, ldm_phantom"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HYDRA))
def test_train_composition_errors(case):
    overrides, expected = HYDRA[case]
    assert command_exit("train", *overrides).code == expected


def test_prepared_images_of_another_mode_are_read_as_grayscale(tmp_path, shared_data_dir):
    """An RGB (or palette) PNG in a prepared folder trains as its luminance, as prepare would have written it."""
    from cxr_ldm.data.datamodule import CXRDataModule
    from cxr_ldm.phantom.bootstrap import ensure_phantom_prepared

    prepared = ensure_phantom_prepared(tmp_path / "prepared", tmp_path / "raw", n_studies=40, raw_size=64, size=32,
                                       num_workers=1)  # fmt: skip
    dm = CXRDataModule(str(prepared), image_size=32, batch_size=4, num_workers=0, pin_memory=False,
                       persistent_workers=False)  # fmt: skip
    dm.setup("validate")
    before = next(iter(dm.val_dataloader()))
    first = sorted((prepared / "images").rglob("*.png"))
    for path in first:
        with Image.open(path) as im:
            gray = im.convert("L")
        Image.merge("RGB", (gray, gray, gray)).save(path)
    after = next(iter(dm.val_dataloader()))
    assert after["image"].shape == before["image"].shape and torch.equal(after["image"], before["image"])


# ------------------------------------------------------------------------------------------------- prepare
@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    from cxr_ldm.phantom.studies import generate_phantom

    out = tmp_path_factory.mktemp("raw")
    generate_phantom(out, n_studies=12, size=64, seed=1, num_workers=1, progress=False)
    return out


def _cli(module: str, *args: str, cwd: Path) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.returncode, proc.stderr.strip()


PREPARE = {  # case id: (arguments, exit status, the exact message; <raw> = a phantom MIMIC-CXR-JPG tree)
    "missing options": ([], 2,
        "cxr_ldm.prepare: missing required option(s): mimic_root=, reports=, out_dir=\n"
        "  mimic_root=...  the MIMIC-CXR-JPG root (with mimic-cxr-2.0.0-metadata.csv.gz, ...-split.csv.gz, files/)\n"
        "  reports=...  the folder holding files/pXX/pSUBJECT/sSTUDY.txt, or mimic-cxr-reports.zip\n"
        "  out_dir=...  where the prepared images and train/validate/test.csv go\n"
        "see `python -m cxr_ldm.prepare --help`"),
    "no metadata file": (["mimic_root=<tmp>", "reports=<raw>/reports", "out_dir=<tmp>/out"], 1,
        "error: MIMIC-CXR-JPG metadata not found: expected the file <tmp>/mimic-cxr-2.0.0-metadata.csv.gz. "
        "mimic_root must be the MIMIC-CXR-JPG root (the folder with mimic-cxr-2.0.0-metadata.csv.gz, "
        "mimic-cxr-2.0.0-split.csv.gz and files/)."),
    "missing reports": (["mimic_root=<raw>", "reports=<tmp>/reports", "out_dir=<tmp>/out"], 1,
        "error: reports=<tmp>/reports does not exist: pass the folder holding files/pXX/pSUBJECT/sSTUDY.txt or the "
        "mimic-cxr-reports.zip file."),
    "size too small": (["mimic_root=<raw>", "reports=<raw>/reports", "out_dir=<tmp>/out", "size=4"], 1,
        "error: size=4 is too small; use the shorter side in pixels, e.g. size=512"),
    "wrong type": (["mimic_root=<raw>", "reports=<raw>/reports", "out_dir=<tmp>/out", "size=big"], 1,
        "error: size=big: expected an integer, like its default 512"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PREPARE))
def test_prepare_user_errors(case, tmp_path, raw):
    args, status, expected = PREPARE[case]
    (tmp_path / "file").write_text("x")
    args = [a.replace("<tmp>", str(tmp_path)).replace("<raw>", str(raw)) for a in args]
    code, message = _cli("cxr_ldm.prepare", *args, cwd=tmp_path)
    assert code == status, message
    assert message == expected.replace("<tmp>", str(tmp_path)).replace("<raw>", str(raw))


def test_prepare_skips_an_image_of_more_than_8_bits_saying_why(tmp_path, raw):
    from cxr_ldm.data.preparation import prepare_dataset

    source = tmp_path / "raw"
    shutil.copytree(raw, source)
    victim = sorted((source / "files").rglob("*.jpg"))[0]
    Image.fromarray(np.full((80, 64), 40000, np.uint16)).save(victim, format="PNG")  # 16 bit, under a .jpg name
    result = prepare_dataset(source, source / "reports", tmp_path / "out", size=32, num_workers=1, progress=False)
    report = __import__("json").loads((tmp_path / "out" / "prepare_report.json").read_text())
    (skipped,) = [d for d in result.skipped["unreadable_image"] if victim.stem == d]
    assert report["unreadable_errors"][skipped] == ("mode I;16 (16-bit): prepare takes 8-bit images as MIMIC-CXR-JPG "
                                                    "has them; convert the source to 8-bit grayscale first")  # fmt: skip


# ------------------------------------------------------------------------------------------------- phantom
PHANTOM = {
    "missing out_dir": ([], 2,
        "cxr_ldm.phantom: missing required option(s): out_dir=\n"
        "  out_dir=...  the folder to write the phantom MIMIC-CXR-JPG tree into\n"
        "see `python -m cxr_ldm.phantom --help`"),
    "no studies": (["out_dir=<tmp>/p", "n_studies=0"], 1, "error: n_studies must be at least 1, got 0"),
    "images too small": (["out_dir=<tmp>/p", "size=8"], 1,
        "error: size (the shorter image side) must be at least 16 pixels, got 8"),
    "wrong type": (["out_dir=<tmp>/p", "n_studies=many"], 1,
        "error: n_studies=many: expected an integer, like its default 100"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PHANTOM))
def test_phantom_user_errors(case, tmp_path):
    args, status, expected = PHANTOM[case]
    (tmp_path / "file").write_text("x")
    code, message = _cli("cxr_ldm.phantom", *[a.replace("<tmp>", str(tmp_path)) for a in args], cwd=tmp_path)
    assert code == status, message
    assert message == expected.replace("<tmp>", str(tmp_path))


# ------------------------------------------------------------------------------------------------- inference
LONG = "Large right pleural effusion with " + "adjacent compressive atelectasis and " * 12 + "no pneumothorax."
CACHE = ["experiment=ldm_phantom", "model.autoencoder_ckpt={ae}", "paths.data_dir={data}", *SMALL]


@pytest.fixture(scope="module")
def inference_files(tmp_path_factory, trained_ldm_ckpt, tiny_ae_ckpt, shared_data_dir, phantom_prepared) -> dict:
    """A plain file, a model folder of another project (a diffusers pipeline written by diffusers), a folder that
    is not empty, the models and data."""
    import diffusers
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    root = tmp_path_factory.mktemp("inference_inputs")
    (root / "file").write_text("not a folder\n")
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 8),
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(root / "diffusers_model")
    (root / "full").mkdir()
    (root / "full" / "notes.txt").write_text("x\n")
    return {"file": root / "file", "other": root / "diffusers_model", "full": root / "full", "ldm": trained_ldm_ckpt,
            "ae": tiny_ae_ckpt, "data": shared_data_dir, "prepared": phantom_prepared(),
            "diffusers_version": diffusers.__version__}  # fmt: skip


OTHER = ("is a DDPMPipeline folder of diffusers {diffusers_version} (model_index.json _class_name 'DDPMPipeline'), not "
         "a cxr_ldm model: give a trained ldm.ckpt, a folder from `python -m cxr_ldm.export`, or the MONAI bundle folder")
S = ["model={ldm}", "prompts=[Effusion.]", "out_dir=<tmp>/s"]  # a sample command that works
E = ["out_dir=<tmp>/e", "metrics=[diversity]", "data_dir={prepared}", "model={ldm}", "sampling.prompts=[Effusion.]"]
TOO_LONG = ("('Large right pleural effusion with adjacent ...') is 111 tokens, more than the text encoder's 77: "
            "shorten it")  # fmt: skip
TRUNCATE = ", or set truncate_prompts=true to cut it at 77 tokens as training does"
INFERENCE = {  # case id: (command, arguments, the exact line; <tmp> = the test's folder, {name} = inference_files)
    "sample: out_dir is a file": ("sample", [*S[:2], "out_dir={file}"],
        "error: out_dir={file} is a file, not a folder: give the path of a folder (it is created when missing)"),
    "sample: out_dir under a file": ("sample", [*S[:2], "out_dir={file}/samples"],
        "error: out_dir={file}/samples: {file} is a file, so no folder can be made under it: give another out_dir"),
    "sample: a folder the system will not create": ("sample", [*S[:2], "out_dir=/proc/cxr_ldm_samples"],
        "error: out_dir=/proc/cxr_ldm_samples: cannot create the folder: No such file or directory; give a folder on "
        "a writable file system"),
    "sample: a prompt over 77 tokens": ("sample", ["model={ldm}", f"prompts=[Effusion.,'{LONG}']", "out_dir=<tmp>/s"],
        f"error: prompts[1] {TOO_LONG}{TRUNCATE}"),
    "sample: a model folder of another project": ("sample", ["model={other}", *S[1:]],
        f"error: model='{{other}}' {OTHER}"),
    "sample: negative guidance": ("sample", [*S, "sampling.guidance_scale=-1"],
        "error: sampling.guidance_scale=-1.0 must be a finite number >= 0 (1 = no guidance; the models here use 7)"),
    "sample: guidance not a number": ("sample", [*S, "sampling.guidance_scale=nan"],
        "error: sampling.guidance_scale=nan must be a finite number >= 0 (1 = no guidance; the models here use 7)"),
    "sample: more steps than the model has timesteps": ("sample", [*S, "sampling.steps=5000"],
        "error: sampling.steps=5000 is more than the model's 1000 diffusion timesteps: use at most 1000"),
    "sample: no such model": ("sample", ["model=<tmp>/nope.ckpt", *S[1:]],
        "error: model not found: '<tmp>/nope.ckpt' (give a trained ldm.ckpt, a folder from `python -m "
        "cxr_ldm.export`, or the MONAI bundle folder)"),
    "sample: no prompts": ("sample", ["model={ldm}", "out_dir=<tmp>/s"],
        """error: no prompts: give prompts='["...", "..."]' or prompts_file=FILE (one per line)"""),
    "sample: unknown sampler": ("sample", [*S, "sampling.sampler=heun"],
        "error: sampling.sampler='heun' is not one of ddim, dpm++2m, unipc, euler, pndm, ddpm"),
    "evaluate: out_dir is a file": ("evaluate", ["out_dir={file}", *E[1:]],
        "error: out_dir={file} is a file, not a folder: give the path of a folder (it is created when missing)"),
    "evaluate: no images to generate": ("evaluate", [*E, "sampling.n=0"],
        "error: sampling.n=0 must be an integer >= 1 (the number of images to generate)"),
    "evaluate: a prompt over 77 tokens": ("evaluate", [*E[:-1], f"sampling.prompts=['{LONG}']"],
        f"error: sampling.prompts[0] {TOO_LONG}{TRUNCATE}"),
    "evaluate: a model folder of another project": ("evaluate", [*E[:3], "model={other}", E[4]],
        f"error: model='{{other}}' {OTHER}"),
    "evaluate: more steps than the model has timesteps": ("evaluate", [*E, "sampling.n=2", "sampling.steps=5000"],
        "error: sampling.steps=5000 is more than the model's 1000 diffusion timesteps: use at most 1000"),
    "export: out_dir is a file": ("export", ["ckpt={ldm}", "out_dir={file}"],
        "error: out_dir={file} is a file, not a folder: give the path of a folder (it is created when missing)"),
    "export: out_dir under a file": ("export", ["ckpt={ldm}", "out_dir={file}/exported"],
        "error: out_dir={file}/exported: {file} is a file, so no folder can be made under it: give another out_dir"),
    "export: out_dir not empty": ("export", ["ckpt={ldm}", "out_dir={full}"],
        "error: out_dir='{full}' exists and is not empty: choose another folder or overwrite=true"),
    "export: a model folder of another project": ("export", ["ckpt={other}", "out_dir=<tmp>/x"],
        f"error: ckpt='{{other}}' {OTHER}"),
    "app: port out of range": ("app", ["model={ldm}", "port=70000"],
        "error: port=70000 must be an integer between 0 and 65535"),
    "app: no images per request": ("app", ["model={ldm}", "max_images=0"], "error: max_images=0 must be an integer >= 1"),
    "app: guidance limit not a number": ("app", ["model={ldm}", "max_guidance=nan"],
        "error: max_guidance=nan must be a finite number >= 0"),
    "app: an example over 77 tokens": ("app", ["model={ldm}", f"examples=[Effusion.,'{LONG}']"],
        f"error: examples[1] {TOO_LONG}"),
    "app: a model folder of another project": ("app", ["model={other}"], f"error: model='{{other}}' {OTHER}"),
    "app: more steps than the model has timesteps": ("app", ["model={ldm}", "max_steps=5000"],
        "error: max_steps=5000 is more than the model's 1000 diffusion timesteps: use at most 1000"),
    "cache_latents: unknown split": ("cache_latents", [*CACHE, "+cache_splits=[trian]"],
        "error: cache_splits=['trian']: unknown split 'trian'; give a list of train, validate, test (e.g. "
        "+cache_splits=[train,validate])"),
    "cache_latents: a cache folder under a file": ("cache_latents", [*CACHE, "data.latent_cache_dir={file}/cache"],
        "error: cannot create the latent cache folder {file}/cache/train-<key>: {file} is a file; set "
        "data.latent_cache_dir to a writable folder"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INFERENCE))
def test_inference_user_errors(case, tmp_path, inference_files):
    command, args, expected = INFERENCE[case]
    args = [_fill(a, tmp_path, inference_files) for a in args]
    ended = command_exit(command, *args)
    message = str(ended.code)
    assert "\n" not in message, message
    message = re.sub(r"/train-[0-9a-f]{16}", "/train-<key>", message)
    assert _normalise(message, tmp_path) == _normalise(_fill(expected, tmp_path, inference_files), tmp_path)


def _run_in_process(module: str, *args: str) -> None:
    """``python -m module args`` in this process, for a run that must succeed."""
    import importlib

    from hydra.core.global_hydra import GlobalHydra

    argv, sys.argv = sys.argv, [module, *args]
    try:
        importlib.import_module(module).main()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()


def test_a_long_prompt_is_cut_at_77_tokens_when_asked(tmp_path, inference_files, capfd):
    """``truncate_prompts=true``: the prompt samples as its first 77 tokens do (as training read its reports), with
    a warning; the images equal those of the prompt cut by hand."""
    from cxr_ldm.data.tokenization import CONTEXT_LENGTH, count_tokens, tokenize

    long = "The " + LONG  # its 77th token ends a word, so a prompt of whole words can stop exactly there
    tokens = tokenize([long])[0]
    assert count_tokens(long) > CONTEXT_LENGTH and int((tokens != 0).sum()) == CONTEXT_LENGTH
    words = long.split()
    cut = next(" ".join(words[:k]) for k in range(len(words)) if count_tokens(" ".join(words[:k])) == CONTEXT_LENGTH)
    assert torch.equal(tokenize([cut])[0], tokens)  # what the text encoder reads of the long prompt
    common = ["model={}".format(inference_files["ldm"]), "n_per_prompt=1", "sampling.steps=2", "progress=false"]
    for name, prompt, extra in (("long", long, ["truncate_prompts=true"]), ("cut", cut, [])):
        _run_in_process("cxr_ldm.sample", *common, f"prompts=['{prompt}']", f"out_dir={tmp_path / name}", *extra)
    a, b = (np.asarray(Image.open(tmp_path / n / "00_000.png")) for n in ("long", "cut"))
    assert np.array_equal(a, b)
    assert f"[WARNING] - prompt of {count_tokens(long)} tokens truncated to 77: 'The Large right" in capfd.readouterr().out


def test_a_read_only_out_dir_is_refused_before_the_model_loads(tmp_path, inference_files):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders (the /proc case of test_inference_user_errors stands in)")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    ended = command_exit("export", "ckpt={}".format(inference_files["ldm"]), f"out_dir={locked / 'x'}")
    assert ended.code == (f"error: out_dir={locked / 'x'}: {locked}, where it would be created, is not writable by "
                          "this user: give a folder you can write to")  # fmt: skip


def test_export_to_a_full_disk_is_one_line_and_leaves_no_folder(tmp_path, inference_files):
    from helpers import small_tmpfs

    disk = tmp_path / "disk"
    with small_tmpfs(disk, "64k") as mounted:
        if not mounted:
            pytest.skip("no tmpfs can be mounted here (root and mount are needed to fill a real disk)")
        ended = command_exit("export", "ckpt={}".format(inference_files["ldm"]), f"out_dir={disk / 'x'}")
        left = sorted(p.name for p in disk.iterdir())
    message = str(ended.code)
    assert message.startswith(f"error: no space left on the device writing the exported model's file {disk}/."), message
    assert message.endswith("(No space left on device); the files written before are intact: free space (or raise "
                            "the quota) and run the same command again")  # fmt: skip
    assert left == []  # neither out_dir nor the temporary folder beside it


@pytest.mark.slow
def test_the_sample_command_ends_with_the_line_and_status_1(tmp_path, inference_files):
    """A real process: Hydra's own log folder under ``out_dir`` is where a file there first fails."""
    proc = run_module("cxr_ldm.sample", "model={}".format(inference_files["ldm"]), "prompts=[Effusion.]",
                      "out_dir={}".format(inference_files["file"]), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip() == _fill(INFERENCE["sample: out_dir is a file"][2], tmp_path, inference_files)


# ------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_the_train_command_ends_with_the_line_and_status_1(tmp_path, files, shared_data_dir):
    proc = run_module("cxr_ldm.train", "experiment=aekl_phantom", f"paths.data_dir={shared_data_dir}",
                      f"hydra.run.dir={tmp_path / 'run'}", *SMALL, f"ckpt_path={files['truncated']}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: ckpt_path={files['truncated']}: the file is truncated")


# ------------------------------------------------------------------------------------------------- the table
def _all_messages() -> list[str]:
    out = [m for _, m in TRAIN.values()] + [m for _, m in HYDRA.values()]
    out += [m for _, _, m in PREPARE.values()] + [m for _, _, m in PHANTOM.values()]
    out += [m for _, _, m in INFERENCE.values()]
    return out


def test_every_case_is_in_the_table():
    """docs/reliability.md shows each message as it is (``<tmp>``, ``<truncated>``, ...: the paths of the case)."""
    table = documented()
    for message in _all_messages():
        for line in message.splitlines():
            shown = re.sub(r"\{(\w+)\}", r"<\1>", line.strip())
            assert shown in table, shown
