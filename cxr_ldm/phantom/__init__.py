"""Phantom chest X-ray studies with known findings, in the MIMIC-CXR-JPG + reports layout.

``python -m cxr_ldm.phantom out_dir=DIR n_studies=N`` writes a tree that ``cxr_ldm.prepare`` reads like MIMIC, so
the whole pipeline runs without credentialed data, and evaluation can check that generated images show what
their prompts ask for. One job per module:

- ``schema``: finding names, device flags, CheXpert label columns, the ground-truth file name;
- ``findings``: what one study shows (severities, then where each finding sits);
- ``anatomy``: one patient's build;
- ``shapes``, ``geometry``, ``view_setup``: the drawing primitives, coordinate frames and random streams;
- ``thorax``, ``pa_findings``, ``devices``, ``exposure``: the layers of a frontal image;
- ``pa_view``, ``lateral_view``: the two views, assembled from those layers;
- ``report_text``: the report and its CheXpert labels;
- ``cohort``, ``studies``: subjects, ids and splits, and the written tree;
- ``bootstrap``: first-use generation + preparation for the training DataModule (``data.phantom``).
"""
