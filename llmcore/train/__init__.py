"""The trainer shared by pretraining and fine-tuning: optimizer and schedules, checkpoints, distributed
launch, metrics. No Prefect here: progress goes out through callbacks (see `Trainer`)."""
