"""``python -m cxr_ldm.prepare mimic_root=DIR reports=DIR_OR_ZIP out_dir=DIR [size=512] [num_workers=N]``."""

from __future__ import annotations

from omegaconf import DictConfig

from cxr_ldm.data.preparation import prepare_dataset
from cxr_ldm.utils import resolvers  # noqa: F401  (registers the resolvers --help and the configs use)
from cxr_ldm.utils.cli import CONF, hydra_command, require_options, run_command


@hydra_command(config_path=CONF, config_name="prepare")
def main(cfg: DictConfig) -> None:
    require_options(
        cfg,
        {
            "mimic_root": "the MIMIC-CXR-JPG root (with mimic-cxr-2.0.0-metadata.csv.gz, ...-split.csv.gz, files/)",
            "reports": "the folder holding files/pXX/pSUBJECT/sSTUDY.txt, or mimic-cxr-reports.zip",
            "out_dir": "where the prepared images and train/validate/test.csv go",
        },
        "cxr_ldm.prepare",
    )
    # a wrong path or option, a full disk: one line, no traceback
    result = run_command(
        lambda c: prepare_dataset(mimic_root=c.mimic_root, reports=c.reports, out_dir=c.out_dir, size=c.size,
                                  num_workers=c.num_workers, views=c.views),
        cfg, user_errors=(ValueError, OSError),  # OSError: a path that cannot be read or written, a full disk
    )  # fmt: skip
    skipped = ", ".join(f"{k}={len(v)}" for k, v in result.skipped.items() if v) or "none"
    print(
        f"kept {result.kept} images ({result.resized} resized, {result.reused} reused from an earlier run) "
        f"in {result.seconds:.1f} s; skipped: {skipped}\n"
        f"wrote {cfg.out_dir}/train.csv, validate.csv, test.csv and prepare_report.json"
    )


if __name__ == "__main__":
    main()
