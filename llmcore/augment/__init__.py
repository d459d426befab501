"""Data augmentation: EDA-style edits (`eda`), back-translation and paraphrase round trips (`backtranslate`),
and the augment stage's unit of work (`parts`)."""
