"""Training batches of encoded examples for the Trainer: endless epochs, each in a seeded order, with a
saveable position so a resumed run continues exactly where it stopped."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch


class ExampleBatches:
    def __init__(self, examples: Sequence[dict], batch_size: int, collate: Callable[[Sequence[dict]], dict[str, torch.Tensor]],
                 seed: int = 0):
        if not examples:
            raise ValueError("no training examples: check the task's file and its validation/test fractions")
        self.examples, self.batch_size, self.collate, self.seed = examples, batch_size, collate, seed
        self.epoch, self.position = 0, 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.examples))

    def __iter__(self) -> ExampleBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        """The next batch_size examples of this epoch's order; the last batch of an epoch may be smaller."""
        order = self._order()
        rows = order[self.position : self.position + self.batch_size]
        self.position += len(rows)
        if self.position >= len(order):
            self.epoch, self.position = self.epoch + 1, 0
        return self.collate([self.examples[i] for i in rows])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


def batched(examples: Sequence[dict], batch_size: int, collate: Callable) -> list[dict[str, torch.Tensor]]:
    """Every example once, in order (validation)."""
    return [collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]
