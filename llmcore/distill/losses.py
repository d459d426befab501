"""Knowledge-distillation losses (Hinton et al. 2015; DistilBERT, Sanh et al. 2019).

Word level: the student matches the teacher's temperature-softened distribution over the vocabulary at
every position that has a label,

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

(T^2 keeps the soft term's gradients on the scale of the hard term's as T changes), optionally plus
`hidden_weight` times a cosine or MSE loss between the hidden states of mapped layers. With alpha 0 it
is plain cross-entropy on the labels: fine-tuning without a teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcore.model import IGNORE


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_teacher^T || p_student^T), summed over the vocabulary, averaged over rows. Both (N, V)."""
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float = 2.0,
            alpha: float = 0.5) -> torch.Tensor:
    """The mixed loss above over the positions whose label is not IGNORE. student, teacher: logits (..., V)
    aligned with labels (...): a causal model's logits shifted already (position t against label t + 1)."""
    counted = labels != IGNORE
    s, t, y = student[counted], teacher[counted], labels[counted]
    hard = F.cross_entropy(s.float(), y)
    if alpha == 0:
        return hard
    return alpha * soft_loss(s, t, temperature) + (1 - alpha) * hard


def hidden_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, kind: str = "cosine") -> torch.Tensor:
    """Hidden states (B, T, d) of a student layer against its mapped teacher layer, over the positions of
    `mask` (B, T) (all when None): 1 - cosine similarity (DistilBERT), or mean squared error."""
    s, t = student.float(), teacher.float()
    if mask is not None:
        s, t = s[mask.bool()], t[mask.bool()]
    if kind == "cosine":
        return (1 - F.cosine_similarity(s, t, dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(s, t)
    raise ValueError(f"unknown hidden-state loss {kind!r}; use cosine or mse")
