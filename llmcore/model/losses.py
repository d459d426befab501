"""Training losses. Every objective is token cross-entropy; they differ in which labels the collator
(`llmcore.objectives`) builds, and labels equal to IGNORE (-100: padding, unmasked MLM positions,
prompts) never count."""

import torch
import torch.nn.functional as F

IGNORE = -100


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean over counted labels. logits (..., C), labels (...)."""
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE,
                           label_smoothing=label_smoothing)


def causal_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, head=lambda h: h) -> torch.Tensor:
    """Next-token prediction: position t is scored on labels[t + 1]. `head` maps hidden states to logits
    (the identity when `hidden` already is logits) and sees only the positions whose label counts, so a
    prompt or padding costs no vocabulary projection. Under torch.compile every position is projected: the
    selection's data-dependent shape would break the compiled graph (and wait for the GPU)."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    if torch.compiler.is_compiling():
        return cross_entropy(head(hidden), targets)
    counted = targets != IGNORE
    return cross_entropy(head(hidden[counted]), targets[counted])


# Masked LM (BERT: labels at masked positions), next sentence prediction (labels 0 / 1 per pair),
# sequence-to-sequence (target tokens; label smoothing as in Vaswani et al. 2017, section 5.4) and T5 span
# corruption (sentinel-delimited spans as the target) are all plain cross-entropy over their labels.
masked_lm_loss = nsp_loss = seq2seq_loss = span_corruption_loss = cross_entropy
