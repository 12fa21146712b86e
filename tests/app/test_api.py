"""The running app through ``gradio_client``, as a script would use it: the ``generate`` endpoint, its messages
for bad input, its progress, the queue that makes a second caller wait, and the address it listens on."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason='the app tests need the app extra: pip install -e ".[app]"')
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from cxr_ldm.pipelines import CXRLDMPipeline  # noqa: E402

pytest_plugins = ["ldm_fixtures"]
pytestmark = pytest.mark.slow
POLL_S, MAX_WAIT_S = 0.05, 120


@pytest.fixture()
def client(app_server, tmp_path: Path) -> Client:
    return Client(app_server.url, verbose=False, download_files=str(tmp_path / "downloads"))


@pytest.fixture(scope="module")
def pipe(app_ckpt: Path) -> CXRLDMPipeline:
    return CXRLDMPipeline.load(app_ckpt)


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


def test_the_generate_endpoint_takes_prompt_images_guidance_steps_seed_and_returns_the_gallery(
    client: Client, pipe: CXRLDMPipeline
):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    assert names == ["prompt", "n_images", "guidance_scale", "steps", "seed", "sampler"]
    assert [r["component"] for r in endpoint["returns"]] == ["Gallery"]

    gallery = client.predict("Large left pleural effusion.", 3, 5.0, 6, 21, api_name="/generate")
    assert [item["caption"] for item in gallery] == ["seed 21", "seed 22", "seed 23"]
    expected = pipe(["Large left pleural effusion."] * 3, seeds=[21, 22, 23], num_inference_steps=6,
                    guidance_scale=5.0, output_type="pil", progress=False)  # the model's default sampler  # fmt: skip
    for item, image in zip(gallery, expected, strict=True):
        got = pixels(item["image"])
        assert got.shape == (32, 32)
        # another process (one thread) against this one: the same image up to one grey level of float noise
        assert np.abs(got.astype(int) - np.asarray(image).astype(int)).max() <= 1

    other = "dpm++2m" if pipe.default_sampler != "dpm++2m" else "ddim"
    second = client.predict("Large left pleural effusion.", 1, 5.0, 6, 21, other, api_name="/generate")
    assert not np.array_equal(pixels(second[0]["image"]), pixels(gallery[0]["image"]))  # the sampler is used


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", 2, 7.0, 5, 0), "The report text is empty"),
        (("Moderate cardiomegaly. " * 30, 2, 7.0, 5, 0), "tokens, over the 77 the text encoder reads: shorten it."),
        (("Moderate cardiomegaly.", 0, 7.0, 5, 0), "Number of images must be a whole number from 1 to 6 (got 0)."),
        (("Moderate cardiomegaly.", 9, 7.0, 5, 0), "Number of images must be a whole number from 1 to 6 (got 9)."),
        (("Moderate cardiomegaly.", 2, 7.0, 61, 0), "Steps must be a whole number from 1 to 60 (got 61)."),
    ],
)
def test_bad_input_is_a_message_not_a_traceback(client: Client, args, message):
    with pytest.raises(AppError) as caught:
        client.predict(*args, api_name="/generate")
    assert message in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_a_job_reports_per_step_progress(client: Client):
    job = client.submit("Moderate cardiomegaly.", 4, 7.0, 40, 0, api_name="/generate")
    seen: list[tuple[int | None, int | None, str | None]] = []
    deadline = time.monotonic() + MAX_WAIT_S
    while not job.done() and time.monotonic() < deadline:
        status = job.status()
        for unit in status.progress_data or []:
            seen.append((unit.index, unit.length, unit.unit))
        time.sleep(POLL_S)
    assert len(job.result(timeout=MAX_WAIT_S)) == 4
    steps = [(i, n) for i, n, unit in seen if unit == "step"]
    assert steps and {n for _, n in steps} == {40} and len({i for i, _ in steps}) > 1  # several steps seen


def test_a_second_caller_waits_in_the_queue_and_both_get_their_images(app_server, tmp_path: Path):
    first = Client(app_server.url, verbose=False, download_files=str(tmp_path / "a"))
    second = Client(app_server.url, verbose=False, download_files=str(tmp_path / "b"))
    long_job = first.submit("Large right pneumothorax.", 6, 7.0, 60, 0, api_name="/generate")
    deadline = time.monotonic() + MAX_WAIT_S
    while long_job.status().code not in (Status.PROCESSING, Status.PROGRESS) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    waiting = second.submit("Moderate cardiomegaly.", 2, 7.0, 5, 3, api_name="/generate")
    codes = set()
    while not waiting.done() and time.monotonic() < deadline:
        codes.add(waiting.status().code)
        if long_job.done():
            break
        time.sleep(POLL_S)
    assert Status.IN_QUEUE in codes  # it waited while the first job ran
    assert [g["caption"] for g in waiting.result(timeout=MAX_WAIT_S)] == ["seed 3", "seed 4"]
    assert len(long_job.result(timeout=MAX_WAIT_S)) == 6
    assert app_server.process.poll() is None  # still serving


def test_it_listens_on_127_0_0_1_only(app_server):
    """The kernel's socket table (no traffic to any other address): the port is bound to the loopback address."""
    port = f"{app_server.port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).is_file():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.rsplit(":", 1)
            if local_port == port and state == "0A":  # LISTEN
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian

