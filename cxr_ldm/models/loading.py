"""One entry for every kind of model path: a trained ``.ckpt``, an exported folder or the MONAI bundle."""

from __future__ import annotations

import json
from pathlib import Path

from cxr_ldm.models.components import LDMComponents, ModelLoadError, read_ldm_checkpoint
from cxr_ldm.models.exported import EXPORTED_CLASS, INDEX_FILE, is_exported_folder, read_exported
from cxr_ldm.models.monai_bundle import SD21_TEXT_ENCODER_HINT, is_monai_bundle, read_monai_bundle

KINDS = "a trained ldm.ckpt, a folder from `python -m cxr_ldm.export`, or the MONAI bundle folder"


def existing_path(path: str | Path, what: str = "model") -> Path:
    resolved = Path(str(path)).expanduser()
    if not resolved.exists():
        raise ModelLoadError(f"{what} not found: {str(resolved)!r} (give {KINDS})")
    return resolved


def model_kind(path: Path, option: str = "model") -> str:
    """``checkpoint``, ``exported`` or ``monai_bundle``; a folder of another kind is a clear error naming
    ``option`` (the command's option that gave the path)."""
    if path.is_file():
        return "checkpoint"
    if is_exported_folder(path):
        other = _other_project(path)
        if other is not None:
            raise ModelLoadError(f"{option}={str(path)!r} is {other}, not a cxr_ldm model: give {KINDS}")
        return "exported"
    if is_monai_bundle(path):
        return "monai_bundle"
    raise ModelLoadError(
        f"{option}={str(path)!r} is a folder of neither known kind: expected an exported model (model_index.json) or "
        "a MONAI bundle (configs/inference.json); a trained checkpoint is a .ckpt file"
    )


def _other_project(folder: Path) -> str | None:
    """What another project's ``model_index.json`` says the folder is (a diffusers pipeline, say); None if ours."""
    try:
        index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return f"a folder whose {INDEX_FILE} is no JSON file"
    name = index.get("_class_name") if isinstance(index, dict) else None
    if name == EXPORTED_CLASS:
        return None
    library = index.get("_diffusers_version") if isinstance(index, dict) else None
    made_by = f"diffusers {library}" if library else "another library"
    return f"a {name or 'unnamed'} folder of {made_by} ({INDEX_FILE} _class_name {name!r})"


def read_components(
    path: str | Path, text_encoder: str | Path | None = None, need_text_encoder: bool = True, option: str = "model"
) -> LDMComponents:
    """Components of whatever ``path`` holds. A bundle takes its text encoder from ``text_encoder``;
    ``need_text_encoder=False`` skips it (fine-tuning builds the text encoder from its own config). Errors name
    ``option``, the option that gave ``path`` (``model``, ``ckpt``, ``model.init_from``)."""
    resolved = existing_path(path, option)
    kind = model_kind(resolved, option)
    if kind == "checkpoint":
        return read_ldm_checkpoint(resolved, option)
    if kind == "exported":
        return read_exported(resolved, with_text_encoder=need_text_encoder)
    if need_text_encoder and text_encoder is None:
        raise ModelLoadError(f"the MONAI bundle needs its text encoder: give {SD21_TEXT_ENCODER_HINT}")
    return read_monai_bundle(resolved, text_encoder if need_text_encoder else None)
