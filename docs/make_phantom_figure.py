"""Draw docs/phantom_examples.png: prepared phantom images with the report sentences they were prepared with.

    python docs/make_phantom_figure.py RAW_DIR PREPARED_DIR docs/phantom_examples.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxr_ldm.phantom.studies import load_ground_truth
from cxr_ldm.utils.figures import captioned_panels

WANTED = [  # (finding column, minimum severity), one panel each
    ("normal", 1), ("cardiomegaly", 3), ("pleural_effusion_right", 3), ("pleural_effusion_left", 3),
    ("pneumothorax_left", 2), ("nodule", 3),
]  # fmt: skip


def main(raw: Path, prepared: Path, out: Path) -> None:
    frame = pd.read_csv(prepared / "train.csv", dtype={"dicom_id": str})
    truth = load_ground_truth(raw).astype({"dicom_id": str})
    frame = frame.merge(truth.drop(columns=["subject_id", "study_id"]), on="dicom_id")
    picked = []
    for column, severity in WANTED:
        hits = frame[(frame[column] >= severity) & ~frame.index.isin(picked)]
        if len(hits):
            picked.append(hits.index[0])
    panels = [np.asarray(Image.open(prepared / frame.loc[i, "image"])) for i in picked]
    captions = [" ".join(json.loads(frame.loc[i, "sentences"])) for i in picked]
    captioned_panels(panels, captions, panel_size=220, chars_per_line=34, max_lines=12).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
