"""The cohort plan, drawn in the main process from the seed alone: subjects, ids, dates, report gaps, splits."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

__all__ = ["StudyTask", "plan_cohort"]


@dataclass(frozen=True)
class StudyTask:
    """Everything a worker needs to render and write one study."""

    out_dir: str
    size: int
    seed: int
    index: int
    subject_index: int
    subject_id: int
    study_id: int
    study_date: int
    study_time: float
    follow_up: bool
    has_report: bool


def plan_cohort(
    n_studies: int, seed: int, out_dir: str, size: int
) -> tuple[list[StudyTask], dict[int, str], int]:
    """Subjects with 1..3 studies, ids, dates, report gaps and a patient-level split.

    Returns the tasks in study order, the split of each subject id and the number of subjects.
    """
    rng = np.random.default_rng([seed, 0xC0407])
    studies_per_subject: list[int] = []
    while sum(studies_per_subject) < n_studies:
        studies_per_subject.append(int(rng.choice(3, p=[0.6, 0.25, 0.15])) + 1)
    if studies_per_subject:
        studies_per_subject[-1] -= sum(studies_per_subject) - n_studies
    n_subjects = len(studies_per_subject)
    subject_ids = np.sort(rng.choice(10_000_000, size=n_subjects, replace=False) + 10_000_000)
    study_ids = rng.choice(10_000_000, size=n_studies, replace=False) + 50_000_000
    draw = rng.random(n_subjects)
    split = np.where(draw < 0.9, "train", np.where(draw < 0.95, "validate", "test")).astype(object)
    if n_studies >= 20:  # every split must exist for the pipeline to run end to end
        order = rng.permutation(n_subjects)
        for name in ("validate", "test", "train"):
            if name not in split:
                donor = next(int(i) for i in order if (split == split[i]).sum() > 1)
                split[donor] = name
    missing_report = rng.random(n_studies) < 0.01
    if n_studies >= 20 and not missing_report.any():
        missing_report[rng.integers(n_studies)] = True
    tasks, index = [], 0
    for subject, count in enumerate(studies_per_subject):
        day = dt.date(2110, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 80)))
        for k in range(count):
            day += dt.timedelta(days=int(rng.integers(1, 700)) if k else 0)
            clock = int(rng.integers(0, 86400))
            study_time = float(f"{clock // 3600:02d}{clock // 60 % 60:02d}{clock % 60:02d}") + round(
                float(rng.random()), 3
            )
            tasks.append(
                StudyTask(out_dir, size, seed, index, subject, int(subject_ids[subject]), int(study_ids[index]),
                          int(day.strftime("%Y%m%d")), round(study_time, 3), k > 0, not bool(missing_report[index]))
            )  # fmt: skip
            index += 1
    split_of = {int(subject_ids[s]): str(split[s]) for s in range(n_subjects)}
    return tasks, split_of, n_subjects
