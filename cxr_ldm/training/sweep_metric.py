"""The number a sweep optimises (``optimized_metric``), and what a run that never validated gets instead."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class MetricNotLoggedError(ValueError):
    """``optimized_metric`` names a metric the run never logged."""


def metric_value(
    metrics: dict[str, float], name: str | None, multirun: bool = False, no_validation: str | None = None
) -> float | None:
    """The value a sweep optimises: the kept (best) checkpoint's score when ModelCheckpoint monitors ``name``
    (also when the run had nothing left to train), else the last logged value.

    A run that never validated (e.g. ``trainer.max_steps`` below one epoch; ``no_validation`` says why) gets that
    reason; a single run then returns None with a warning, a sweep's job fails with that line (a sweeper needs
    a number).
    """
    if not name:
        return None
    if f"best/{name}" in metrics or name in metrics:
        value = metrics.get(f"best/{name}", metrics.get(name))
        log.info("optimized_metric %s = %s", name, value)
        return value
    logged = sorted(metrics)
    if no_validation and name.startswith("val/"):
        message = f"optimized_metric={name} was not logged: {no_validation}"
    else:
        message = (f"optimized_metric={name} was not logged; logged metrics: {logged}. Set optimized_metric to one "
                   f"of them")  # fmt: skip
    if multirun:
        raise MetricNotLoggedError(message)
    log.warning(message)
    return None
