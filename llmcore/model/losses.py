"""Training losses. Every objective is token cross-entropy; they differ in which labels the collator
(`llmcore.objectives`) builds, and labels equal to IGNORE (-100: padding, unmasked MLM positions,
prompts) never count."""

import torch
import torch.nn.functional as F

from .linear import linear

IGNORE = -100


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean over counted labels. logits (..., C), labels (...)."""
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE,
                           label_smoothing=label_smoothing)


def causal_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token prediction: position t is scored on labels[t + 1]. The logits are `hidden @ weight.T` (the
    LM head), or `hidden` itself when no weight is given. Only positions whose label counts are projected,
    so a prompt or padding costs no vocabulary projection; on CPU the projection and the cross-entropy run
    fused (`linear_cross_entropy`). Under torch.compile every position is projected: the selection's
    data-dependent shape would break the compiled graph (and wait for the GPU)."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    if torch.compiler.is_compiling():
        return cross_entropy(hidden if weight is None else linear(hidden, weight), targets)
    counted = targets != IGNORE
    hidden, targets = hidden[counted], targets[counted]
    if weight is None:
        return cross_entropy(hidden, targets)
    if hidden.is_cpu:
        return linear_cross_entropy(hidden, weight, targets)
    return cross_entropy(linear(hidden, weight), targets)


CHUNK_ELEMENTS = 1 << 22  # logits per chunk (16 MiB in fp32): cache-sized blocks of rows


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """cross_entropy(hidden @ weight.T, targets), mean over rows, computed a block of rows at a time without
    keeping the (rows x vocabulary) logits: each block's softmax gives the gradients at once, which backward
    only scales (the fused linear cross-entropy of Liger-Kernel / Apple's Cut Cross-Entropy, here in plain
    torch). Saves the fp32 copy of the logits, their log-softmax backward and their memory: measured in
    benchmarks/model.py. Under autocast the matmuls run in its dtype, the softmax in fp32, as autocast would."""
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
    return _LinearCrossEntropy.apply(hidden, weight, targets, dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, dtype):
        n = hidden.shape[0]
        with torch.autocast("cpu", enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32) if ctx.needs_input_grad[1] else None
            total = torch.zeros((), dtype=torch.float32)
            rows = max(1, CHUNK_ELEMENTS // weight.shape[0])
            for start in range(0, n, rows):
                block, t = slice(start, start + rows), targets[start : start + rows]
                logits = (h[block] @ w.t()).float()
                lse = logits.logsumexp(-1)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                if grad_h is None and grad_w is None:
                    continue
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                probs[torch.arange(len(t)), t] -= 1  # d(mean loss)/d(logits) = (softmax - onehot) / n
                d_logits = probs.div_(n).to(dtype)
                if grad_h is not None:
                    grad_h[block] = d_logits @ w
                if grad_w is not None:
                    grad_w += (d_logits.t() @ h[block]).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = hidden.dtype, weight.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad):
        grad_h, grad_w = ctx.saved_tensors
        scaled = [None if g is None else (g * grad).to(t) for g, t in zip((grad_h, grad_w), ctx.dtypes)]
        return scaled[0], scaled[1], None, None


# Masked LM (BERT: labels at masked positions), next sentence prediction (labels 0 / 1 per pair),
# sequence-to-sequence (target tokens; label smoothing as in Vaswani et al. 2017, section 5.4) and T5 span
# corruption (sentinel-delimited spans as the target) are all plain cross-entropy over their labels.
masked_lm_loss = nsp_loss = seq2seq_loss = span_corruption_loss = cross_entropy
