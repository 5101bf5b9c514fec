"""Metric writers (JSONL, TensorBoard) and console progress."""
