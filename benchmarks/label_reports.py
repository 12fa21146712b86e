"""Sentences/s of the report labeler (``cxr_ldm.metrics.report_labels``) on one CPU core.

10,000 report sentences (by default) drawn from the phrasing suite (``tests/metrics/phrasing_suite.yaml``) and
phantom reports, each made unique with a number so that no cache helps; labelled in one batch through spaCy's
``pipe`` (``label_texts``) and one by one (``read_findings``, what adherence calls per prompt). The pipeline
is built before the clock starts (once per process, as in use).

    OMP_NUM_THREADS=1 python benchmarks/label_reports.py --sentences 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from cxr_ldm.data.reports import parse_report, report_sentences  # noqa: E402
from cxr_ldm.metrics.report_labels import label_texts, pipeline, read_findings  # noqa: E402
from cxr_ldm.phantom.findings import complete_details, sample_findings  # noqa: E402
from cxr_ldm.phantom.report_text import write_report  # noqa: E402


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct report sentences: the suite's and phantom reports', numbered."""
    suite = yaml.safe_load((REPO / "tests/metrics/phrasing_suite.yaml").read_text(encoding="utf-8"))
    pool = [c["text"] for c in suite]
    rng = np.random.default_rng(seed)
    while len(pool) < 2000:
        findings = complete_details(sample_findings(rng), rng)
        text, _ = write_report(findings, rng, "CHEST (PA AND LAT)", "Chest PA and lateral", False, False)
        pool.extend(report_sentences(parse_report(text)))
    return [f"{pool[i % len(pool)]} Compared with study {i}." for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    texts = sentences(args.sentences)
    pipeline()  # built once per process, before timing
    t0 = time.perf_counter()
    label_texts(texts)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for text in texts:
        read_findings(text)
    single = time.perf_counter() - t0
    print(json.dumps({
        "sentences": len(texts), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "batched_s": round(batched, 2), "batched_sentences_per_s": round(len(texts) / batched),
        "one_by_one_s": round(single, 2), "one_by_one_sentences_per_s": round(len(texts) / single),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
