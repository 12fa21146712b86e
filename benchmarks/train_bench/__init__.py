"""The parts of ``benchmarks/train_step.py``: configs and weight files, batches, the timed window, the sides
(ours, plain stage 2, plain stage 1), FLOP counts and the report."""
