"""The page: report text, the sampling knobs, a gallery with each image's seed, a zip download, the model card's
notes; and the ``generate`` API endpoint (inputs: prompt, number of images, guidance scale, steps, seed and,
optionally, sampler; output: the gallery) that ``gradio_client`` scripts call.

One request runs at a time (``queue(default_concurrency_limit=1)``): a second user waits in the queue and sees
their place, then the progress of their own request, step by step. A bad request is a message on the page
(``gr.Error`` with the sentences of :meth:`Generator.check`), never a traceback. Telemetry is off and the
theme's fonts are served by the app itself, so the page makes no request beyond the machine serving it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from cxr_ldm.pipelines import SAMPLERS
from cxr_ldm.ui.generation import Generator

CSS = "#model-note {font-size: 0.9em; opacity: 0.85}"


def generate_fn(generator: Generator):
    """The event handler over ``generator``: gallery items ``(png, "seed N")`` and the zip for the download."""

    def generate(
        prompt: str,
        n_images: float,
        guidance_scale: float,
        steps: float,
        seed: float,
        sampler: str | None = None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[list[tuple[str, str]], str]:
        request, problems = generator.check(prompt, n_images, guidance_scale, steps, seed, sampler)
        if problems:
            raise gr.Error(" ".join(problems), print_exception=False)
        progress(0, desc="starting")
        result = generator.generate(request)
        gallery = [(str(path), f"seed {seed}") for path, seed in zip(result.files, result.seeds, strict=True)]
        return gallery, str(result.zip_path)

    return generate


def build_app(
    generator: Generator,
    title: str,
    examples: Sequence[str],
    summary: str,
    note: str,
    queue_size: int = 16,
) -> gr.Blocks:
    """The Blocks app (queued, not launched)."""
    pipe, limits = generator.pipe, generator.limits
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {title}\n{summary}")
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="Report text", lines=3, elem_id="prompt",
                                    placeholder="Findings and impression, e.g. \"Small left pleural effusion.\"")  # fmt: skip
                gr.Examples(examples=[[e] for e in examples], inputs=[prompt], label="Example prompts",
                            cache_examples=False)  # fmt: skip
                with gr.Row():
                    n_images = gr.Number(value=min(4, limits.max_images), precision=0, elem_id="n-images",
                                         label=f"Number of images (1-{limits.max_images})")  # fmt: skip
                    seed = gr.Number(value=0, precision=0, elem_id="seed", label="Seed (image k uses seed + k)")
                with gr.Row():
                    steps = gr.Number(value=min(pipe.default_num_inference_steps, limits.max_steps), precision=0,
                                      elem_id="steps", label=f"Steps (1-{limits.max_steps})")  # fmt: skip
                    sampler = gr.Dropdown(list(SAMPLERS), value=pipe.default_sampler, label="Sampler",
                                          elem_id="sampler")  # fmt: skip
                guidance = gr.Slider(0.0, limits.max_guidance, value=pipe.default_guidance_scale, step=0.5,
                                     label="Guidance scale", elem_id="guidance")  # fmt: skip
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Generated images", format="png", columns=4, object_fit="contain",
                                     elem_id="gallery", interactive=False)  # fmt: skip
                download = gr.DownloadButton("Download images + settings (.zip)", interactive=False,
                                             elem_id="download")  # fmt: skip
        gr.Markdown(note, elem_id="model-note")
        last_zip = gr.State(None)

        event = button.click(
            generate_fn(generator),
            inputs=[prompt, n_images, guidance, steps, seed, sampler],
            outputs=[gallery, last_zip],
            api_name="generate",
        )
        event.success(_download, inputs=last_zip, outputs=download, api_visibility="private")
    demo.queue(default_concurrency_limit=1, max_size=int(queue_size))
    return demo


def _download(path: str | None) -> Any:
    return gr.DownloadButton(value=path, interactive=path is not None)


def launch(demo: gr.Blocks, host: str, port: int, allowed: Sequence[str] = (), **kwargs: Any) -> Any:
    """Serve ``demo`` on ``host:port`` (``port=0``: a free port); keeps running unless ``prevent_thread_lock``."""
    return demo.launch(
        server_name=host, server_port=int(port) or None, allowed_paths=[str(p) for p in allowed], css=CSS,
        share=False, show_error=False, footer_links=["api", "gradio"], **kwargs,
    )  # fmt: skip
