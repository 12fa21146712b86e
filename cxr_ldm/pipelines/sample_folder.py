"""A folder of generated images and its ``samples.json``: the one writer and the one reader of that file.

Images are written as 8-bit PNGs first (memory stays bounded whatever the count, every measure reads the pixels
a person looks at) and each file appears complete or not at all (temp file + rename; the next run removes the
temporary files of a killed one). A re-run with the same model, prompts, seeds and settings keeps the images
already there and only makes the missing ones; other settings discard them. Image ``k`` always uses its own seed, so it does not depend on which images were already done.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cxr_ldm.pipelines.settings import SamplingSettings
from cxr_ldm.utils.atomic import atomic_write, atomic_write_text, remove_stale_temporaries
from cxr_ldm.utils.hashing import json_digest
from cxr_ldm.utils.images import save_png

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.json"
FORMAT_VERSION = 2


def default_names(n: int) -> list[str]:
    return [f"{k:05d}.png" for k in range(n)]


def sample_to_folder(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    settings: SamplingSettings,
    model: str,
    names: Sequence[str] | None = None,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate ``prompts[k]`` with ``seeds[k]`` into ``out_dir/names[k]``; write and return the manifest.

    ``model`` identifies the model (its path): a changed model file (size or mtime) discards earlier images.
    """
    prompts, seeds = [str(p) for p in prompts], [int(s) for s in seeds]
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    names = list(names) if names is not None else default_names(len(prompts))
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # half-written files of a killed run (never read: they have no final name)
    used = settings.resolved(pipe)
    fingerprint = {"model": model, **used, "prompts_sha256": json_digest(prompts), "seeds_sha256": json_digest(seeds)}
    if Path(model).is_file():
        stat = Path(model).stat()
        fingerprint.update(model_size=stat.st_size, model_mtime_ns=stat.st_mtime_ns)
    try:
        previous = read_samples(out) if (out / SAMPLES_FILE).is_file() else None
    except ValueError:
        previous = None  # unreadable: start over
    same = previous is not None and previous.get("fingerprint") == fingerprint
    if not same:  # other settings (or none recorded): nothing on disk may be reused
        for name in names:
            (out / name).unlink(missing_ok=True)
    records = [
        {"file": name, "prompt": prompt, "seed": seed, **used}
        for name, prompt, seed in zip(names, prompts, seeds, strict=True)
    ]
    todo = [k for k, name in enumerate(names) if not (out / name).is_file()]
    done = set(range(len(names))) - set(todo)

    def write_manifest() -> dict[str, Any]:
        # only finished images are listed, so the folder is readable (and resumable) at any moment
        manifest = {"format_version": FORMAT_VERSION, "model": model, "fingerprint": fingerprint, "settings": used,
                    "complete": len(done) == len(names), "images": [records[k] for k in sorted(done)],
                    **(extra or {})}  # fmt: skip
        atomic_write_text(out / SAMPLES_FILE, json.dumps(manifest, indent=2), "sample manifest", durable=False)
        return manifest

    write_manifest()
    if len(todo) < len(names):
        log.info("reusing %d of %d images already in %s", len(names) - len(todo), len(names), out)
    chunk = settings.batch_size * 4
    with tqdm(total=len(todo), desc=f"sampling ({used['sampler']}, {used['steps']} steps)", unit="img",
              disable=not progress) as bar:  # fmt: skip
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            images = pipe([prompts[k] for k in idx], seeds=[seeds[k] for k in idx], progress=False,
                          **settings.call_kwargs())  # fmt: skip
            for k, image in zip(idx, images, strict=True):  # a file on disk is always complete
                atomic_write(out / names[k], lambda f, image=image: save_png(image[0], f), "image", durable=False)
            done.update(idx)
            bar.update(len(idx))
            write_manifest()
    return write_manifest()


def read_samples(folder: str | Path) -> dict[str, Any]:
    """The manifest of a sample folder; earlier formats (``ckpt`` + ``images``) are read too."""
    path = Path(folder).expanduser() / SAMPLES_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable samples manifest ({err})") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("images"), list):
        raise ValueError(f"{path} has no 'images' list: not written by cxr_ldm.sample or cxr_ldm.evaluate")
    for i, record in enumerate(manifest["images"]):
        if not isinstance(record, dict) or "file" not in record:
            raise ValueError(f"{path}: image record {i} has no 'file'")
    return manifest
