"""Data augmentation: EDA-style edits (`eda`); back-translation comes with the fine-tune flows."""
