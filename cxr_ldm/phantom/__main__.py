"""``python -m cxr_ldm.phantom out_dir=DIR n_studies=N [size=256] [seed=0] [num_workers=N]``.

Writes phantom studies in the MIMIC-CXR-JPG + reports layout (:func:`cxr_ldm.phantom.studies.generate_phantom`);
the options and their defaults are in ``conf/phantom.yaml`` (``--help`` lists them).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from cxr_ldm.phantom.studies import generate_phantom
from cxr_ldm.utils import resolvers  # noqa: F401  (registers the resolvers --help and the configs use)
from cxr_ldm.utils.cli import CONF, hydra_command, require_options, run_command


@hydra_command(config_path=CONF, config_name="phantom")
def main(cfg: DictConfig) -> dict[str, Any]:
    require_options(
        cfg, {"out_dir": "the folder to write the phantom MIMIC-CXR-JPG tree into"}, "cxr_ldm.phantom"
    )
    # a wrong option, a folder that cannot be written, a full disk: one line, no traceback
    summary = run_command(lambda c: generate_phantom(c.out_dir, c.n_studies, c.size, c.seed, c.num_workers), cfg,
                          user_errors=(ValueError, OSError))  # fmt: skip
    print(
        f"wrote {summary['n_studies']} studies ({summary['n_images']} images, {summary['n_reports']} reports, "
        f"{summary['n_subjects']} subjects) to {summary['out_dir']} in {summary['seconds']} s"
    )
    return summary


if __name__ == "__main__":
    main()
