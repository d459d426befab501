"""Fine-tuning tasks: data formats (`formats`) and trivial baselines (`baselines`)."""
