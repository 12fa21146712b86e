"""What an evaluation hands a person: the report (``report.md`` and its figures) built from ``metrics.json``."""
