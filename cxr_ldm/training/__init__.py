"""Training runs: the wiring behind ``python -m cxr_ldm.train`` (and the demo's steps)."""
