"""The app's request logic without a server: the messages for bad input, the request folder and its zip, and
the model card's notes shown on the page."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_ldm.pipelines import CXRLDMPipeline
from cxr_ldm.pipelines.model_card import DATA_USE, model_card
from cxr_ldm.pipelines.sample_folder import read_samples
from cxr_ldm.ui.generation import Generator, Limits, card_sections, model_note, model_summary

pytest_plugins = ["ldm_fixtures"]
LONG_PROMPT = " ".join(["Large right pleural effusion with adjacent compressive atelectasis."] * 12)


@pytest.fixture(scope="module")
def pipe(app_ckpt: Path) -> CXRLDMPipeline:
    return CXRLDMPipeline.load(app_ckpt)


@pytest.fixture()
def generator(pipe: CXRLDMPipeline, app_ckpt: Path, tmp_path: Path) -> Generator:
    return Generator(pipe, str(app_ckpt), tmp_path / "runs", Limits(max_images=6, max_steps=50, max_guidance=15),
                     keep_runs=2)  # fmt: skip


def test_a_good_request_has_no_problems_and_numbers_from_the_page_become_ints(generator: Generator):
    request, problems = generator.check("  Moderate cardiomegaly. ", 3.0, "4.5", 12.0, 7, None)
    assert problems == []
    assert (request.prompt, request.n_images, request.guidance_scale, request.steps, request.seed) == (
        "Moderate cardiomegaly.", 3, 4.5, 12, 7)  # fmt: skip
    assert request.sampler == generator.pipe.default_sampler  # no sampler given: the model's default


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (("", 2, 7, 10, 0), 'The report text is empty: type findings, e.g. "Small left pleural effusion."'),
        (("   ", 2, 7, 10, 0), "The report text is empty"),
        ((LONG_PROMPT, 2, 7, 10, 0), "The report text has 182 tokens, over the 77 the text encoder reads: shorten it."),
        (("a", 0, 7, 10, 0), "Number of images must be a whole number from 1 to 6 (got 0)."),
        (("a", 7, 7, 10, 0), "Number of images must be a whole number from 1 to 6 (got 7)."),
        (("a", 2.5, 7, 10, 0), "Number of images must be a whole number from 1 to 6 (got 2.5)."),
        (("a", None, 7, 10, 0), "Number of images must be a whole number from 1 to 6 (got None)."),
        (("a", 2, 16, 10, 0), "Guidance scale must be a number from 0 to 15 (got 16)."),
        (("a", 2, 7, 0, 0), "Steps must be a whole number from 1 to 50 (got 0)."),
        (("a", 2, 7, 51, 0), "Steps must be a whole number from 1 to 50 (got 51)."),
        (("a", 2, 7, 10, -1), "Seed must be a whole number from 0 to 2147483641 (got -1)."),
    ],
)
def test_each_bad_field_gets_one_sentence_naming_it(generator: Generator, fields, message):
    _, problems = generator.check(*fields)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_every_problem_is_reported_at_once_and_an_unknown_sampler_is_named(generator: Generator):
    _, problems = generator.check("", 0, 7, 500, 0, "euler_a")
    assert [p.split(" ")[0] for p in problems] == ["The", "Number", "Steps", "Sampler"]
    assert problems[-1] == "Sampler must be one of ddim, dpm++2m, unipc, euler, pndm, ddpm (got 'euler_a')."


def test_generate_writes_the_pipelines_images_and_a_zip_of_them_with_their_settings(
    generator: Generator, pipe: CXRLDMPipeline
):
    request, problems = generator.check("Large right pleural effusion.", 3, 5.0, 4, 10, "ddim")
    assert not problems
    result = generator.generate(request)
    assert result.seeds == [10, 11, 12]
    assert [p.name for p in result.files] == ["image_00_seed_10.png", "image_01_seed_11.png", "image_02_seed_12.png"]

    expected = pipe(["Large right pleural effusion."] * 3, seeds=[10, 11, 12], num_inference_steps=4,
                    guidance_scale=5.0, sampler="ddim", output_type="pil", progress=False)  # fmt: skip
    with zipfile.ZipFile(result.zip_path) as archive:
        assert sorted(archive.namelist()) == sorted([p.name for p in result.files] + ["samples.json"])
        for path, image in zip(result.files, expected, strict=True):
            pixels = np.asarray(Image.open(io.BytesIO(archive.read(path.name))))
            assert pixels.shape == (32, 32) and pixels.dtype == np.uint8
            assert np.array_equal(pixels, np.asarray(image)), path.name
        settings = json.loads(archive.read("samples.json"))
    records = settings["images"]
    assert [(r["file"], r["seed"], r["prompt"]) for r in records] == [
        (p.name, s, "Large right pleural effusion.") for p, s in zip(result.files, result.seeds, strict=True)
    ]
    assert {(r["sampler"], r["steps"], r["guidance_scale"]) for r in records} == {("ddim", 4, 5.0)}
    assert read_samples(result.folder)["complete"] is True  # the project's own reader takes the folder


def test_only_the_newest_request_folders_are_kept(generator: Generator):
    request, _ = generator.check("Moderate cardiomegaly.", 1, 7, 1, 0)
    folders = [generator.generate(request).folder for _ in range(3)]
    assert [f.is_dir() for f in folders] == [False, True, True]  # keep_runs=2


def test_card_sections_reads_the_text_under_each_heading():
    card = "# Model\n## Intended use\nResearch only.\nNot clinical.\n\n## Data use\nCredentialed.\n## Other\nx\n"
    assert card_sections(card) == {"Intended use": "Research only.\nNot clinical.", "Data use": "Credentialed."}
    assert card_sections("# nothing here") == {}


def test_the_page_shows_the_intended_use_and_data_use_of_a_checkpoint(pipe: CXRLDMPipeline, app_ckpt: Path):
    note = model_note(pipe)
    expected = card_sections(model_card(pipe.components, app_ckpt, None))  # what `export` would write
    assert note.startswith(f"**Intended use.** {expected['Intended use']}")
    assert f"**Data use.** {DATA_USE}" in note
    assert "Not for clinical use" in note
    assert model_summary(pipe, str(app_ckpt)) == (
        "Model: `ldm.ckpt` (trained checkpoint, 32 px images); its defaults: ddim, 50 steps, guidance 7.")


def test_an_exported_folders_own_card_is_what_the_page_shows(pipe: CXRLDMPipeline, tmp_path: Path):
    card = "# My model\n\n## Intended use\nTeaching radiology residents only.\n\n## Data use\nPhantom data, no patients.\n"
    folder = pipe.save_pretrained(tmp_path / "export", model_card=card)
    note = model_note(CXRLDMPipeline.load(folder))
    assert note == "**Intended use.** Teaching radiology residents only.\n\n**Data use.** Phantom data, no patients."

    (folder / "README.md").write_text("# A card without the two sections\n", encoding="utf-8")
    fallback = model_note(CXRLDMPipeline.load(folder))
    assert "**Intended use.** Research on generative models" in fallback and DATA_USE in fallback
