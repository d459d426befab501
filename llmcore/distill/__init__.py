"""Smaller, faster models out of a fine-tuned teacher: knowledge distillation (losses.py, student.py,
run.py), compression (compress.py: int8, bf16/fp16, magnitude pruning) and their side-by-side
measurement (measure.py)."""
