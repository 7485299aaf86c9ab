"""Extraction: run models from any source over datasets, storing logits/probs and embeddings.

    from divergent.extract import extract, extract_many
    extract("store", "cifar10/resnet20", "cifar10-jpeg", "test")
"""
from .mapping import apply_mapping, load_mapping
from .run import HEAD_POLICIES, extract, extract_many, finish_head, plan_head

__all__ = ["HEAD_POLICIES", "apply_mapping", "extract", "extract_many", "finish_head", "load_mapping", "plan_head"]
