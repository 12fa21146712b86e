"""Inference: one pipeline for trained, exported and released models, its samplers and its sample folders."""

from cxr_ldm.pipelines.pipeline import CXRLDMPipeline
from cxr_ldm.pipelines.schedulers import SAMPLERS

__all__ = ["CXRLDMPipeline", "SAMPLERS"]
