"""The student: a copy of the teacher's architecture with fewer layers and/or a smaller width, started
from the teacher's layers (every k-th one, DistilBERT-style) or fresh; and the `Distiller`, which makes
the student's training forward return the distillation loss (losses.py) against a frozen teacher.

The student keeps the teacher's tokenizer and vocabulary (the soft targets are distributions over it),
its family, positions, norms and special tokens: it loads, decodes and exports like any llmcore model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from llmcore.distill.losses import hidden_loss, kd_loss, soft_loss
from llmcore.model import IGNORE, Transformer, TransformerConfig, build_model


class StudentError(ValueError):
    """A student that cannot be built from its teacher as configured; the message says what to change."""


def student_config(teacher: TransformerConfig, n_layers: int | None = None, n_decoder_layers: int | None = None,
                   d_model: int | None = None, n_heads: int | None = None, d_ff: int | None = None,
                   dropout: float | None = None) -> TransformerConfig:
    """The teacher's config with the student's depth and width; a narrower student keeps the teacher's
    d_ff / d_model ratio unless d_ff is given."""
    fields_ = teacher.to_dict()
    narrower = d_model is not None and d_model != teacher.d_model
    ratio = teacher.d_ff / teacher.d_model
    fields_ |= {
        "n_layers": n_layers or teacher.n_layers,
        "n_decoder_layers": n_decoder_layers or (n_layers if n_layers and teacher.architecture == "encoder-decoder"
                                                 and teacher.n_decoder_layers == teacher.n_layers else teacher.n_decoder_layers),
        "d_model": d_model or teacher.d_model,
        "n_heads": n_heads or teacher.n_heads,
        "d_ff": d_ff or (round(ratio * d_model) if narrower else teacher.d_ff),
        "d_head": None if (narrower or n_heads) else teacher.d_head,
    }
    if dropout is not None:
        fields_["dropout"] = dropout
    try:
        return TransformerConfig.from_dict(fields_)
    except ValueError as exc:
        raise StudentError(f"student of a {teacher.family} teacher: {exc}") from None


def layer_map(teacher_layers: int, student_layers: int, last: bool) -> list[int]:
    """Teacher layer per student layer, spread evenly: the first of each group of k (init: DistilBERT took
    one layer in two) or its last (`last`: the layer whose output a student layer's output imitates)."""
    if student_layers > teacher_layers:
        raise StudentError(f"a student of {student_layers} layers has more than its teacher's {teacher_layers}")
    k = teacher_layers / student_layers
    return [round((i + 1) * k) - 1 if last else round(i * k) for i in range(student_layers)]


def stacks(model: Transformer) -> dict[str, torch.nn.Module]:
    return {name: getattr(model, name) for name in ("encoder", "decoder") if hasattr(model, name)}


def init_from_teacher(student: Transformer, teacher: Transformer) -> dict[str, list[int]]:
    """Copy the teacher's embeddings, heads, norms and every k-th layer into the student (same width only);
    returns the teacher layer each student layer came from, per stack."""
    s, t = student.config, teacher.config
    if (s.d_model, s.n_heads, s.d_head, s.d_ff) != (t.d_model, t.n_heads, t.d_head, t.d_ff):
        raise StudentError(f"init: teacher copies the teacher's layers, so the student needs its width (d_model "
                           f"{t.d_model}, n_heads {t.n_heads}, d_ff {t.d_ff}); this one has d_model {s.d_model}, n_heads "
                           f"{s.n_heads}, d_ff {s.d_ff}: use init: fresh for a narrower student")
    chosen = {name: layer_map(len(stacks(teacher)[name].layers), len(stack.layers), last=False)
              for name, stack in stacks(student).items()}
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        parts = key.split(".")
        if len(parts) > 2 and parts[0] in chosen and parts[1] == "layers":
            parts[2] = str(chosen[parts[0]][int(parts[2])])
        state[key] = source[".".join(parts)]
    student.load_state_dict(state)
    return chosen


def build_student(teacher: Transformer, cfg: TransformerConfig, init: str = "teacher", seed: int = 0) -> tuple[Transformer, dict]:
    """(the student, {stack: teacher layers it was initialised from}; {} when fresh)."""
    torch.manual_seed(seed)
    student = build_model(cfg)
    if init == "fresh":
        return student, {}
    if init != "teacher":
        raise StudentError(f"unknown student init {init!r}; use teacher or fresh")
    return student, init_from_teacher(student, teacher)


@dataclass
class Distiller:
    """Installs the distillation loss as `student`'s training forward (eval mode and generation are
    untouched, so the Trainer's validation loss is the student's own cross-entropy). The teacher is frozen,
    kept in eval mode and out of the student's modules: checkpoints and the optimizer hold the student only."""

    teacher: Transformer
    temperature: float = 2.0
    alpha: float = 0.5           # weight of the soft (teacher) term; 1 - alpha on the labels
    hidden_weight: float = 0.0   # weight of the hidden-state loss on mapped layers
    hidden_kind: str = "cosine"
    last_batch: dict = field(default_factory=dict)  # the last step's loss terms, for inspection

    def __post_init__(self):
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def attach(self, student: Transformer) -> Transformer:
        t, s = self.teacher.config, student.config
        if t.vocab_size != s.vocab_size or t.family != s.family:
            raise StudentError(f"the student ({s.family}, vocabulary {s.vocab_size}) must share the teacher's family and "
                               f"vocabulary ({t.family}, {t.vocab_size}): the soft targets are distributions over it")
        if self.hidden_weight and s.d_model != t.d_model:
            raise StudentError(f"a hidden-state loss compares the student's hidden states with the teacher's: it needs "
                               f"the teacher's d_model ({t.d_model}, the student has {s.d_model}); set hidden_weight: 0")
        original = student.forward

        def forward(*args, **batch):
            if not student.training or batch.get("labels") is None or args:
                return original(*args, **batch)
            return self.loss(student, original, batch)

        student.forward = forward
        return student

    def loss(self, student: Transformer, forward: Callable, batch: dict):
        from llmcore.model.families import Output

        batch = dict(batch)
        labels = batch.pop("labels")
        architecture = student.config.architecture
        if architecture == "encoder-decoder" and batch.get("decoder_input_ids") is None:
            batch["decoder_input_ids"] = student.shift_right(labels)
        if next(self.teacher.parameters()).device != labels.device:
            self.teacher.to(labels.device)
        captured: dict[str, list] = {"student": [], "teacher": []}
        hooks = self._hooks(student, captured) if self.hidden_weight else []
        try:
            if architecture == "decoder":  # position t predicts token t + 1; only labelled positions are projected
                targets = labels[:, 1:]
                counted = targets != IGNORE
                s_logits = self._causal_logits(student, batch, counted)
                with torch.no_grad():
                    t_logits = self._causal_logits(self.teacher, batch, counted)
                targets = targets[counted]
                out = teacher_out = Output()
            else:
                out = forward(**batch)
                with torch.no_grad():
                    teacher_out = self.teacher(**batch)
                s_logits, t_logits, targets = out.logits, teacher_out.logits, labels
        finally:
            for hook in hooks:
                hook.remove()
        loss = kd_loss(s_logits, t_logits, targets, self.temperature, self.alpha)
        terms = {"kd": loss.detach()}
        if out.nsp_logits is not None and batch.get("next_sentence_label") is not None:  # BERT pretraining
            nsp = F.cross_entropy(out.nsp_logits.float(), batch["next_sentence_label"])
            if self.alpha:
                nsp = self.alpha * soft_loss(out.nsp_logits, teacher_out.nsp_logits, self.temperature) + (1 - self.alpha) * nsp
            loss = loss + nsp
            terms["nsp"] = nsp.detach()
        if self.hidden_weight:
            masks = {"input": batch.get("attention_mask"), "target": labels != IGNORE}
            h = sum(hidden_loss(s, t, masks[which], self.hidden_kind)
                    for (s, which), t in zip(captured["student"], captured["teacher"])) / max(1, len(captured["student"]))
            loss = loss + self.hidden_weight * h
            terms["hidden"] = h.detach()
        self.last_batch = terms
        return Output(loss=loss, logits=None)

    @staticmethod
    def _causal_logits(model: Transformer, batch: dict, counted: torch.Tensor) -> torch.Tensor:
        h = model.decoder(model.tok_emb(batch["input_ids"]), batch.get("attention_mask"))
        return model.logits(h[:, :-1][counted])

    def _hooks(self, student: Transformer, captured: dict) -> list:
        hooks = []
        for name, stack in stacks(student).items():
            teacher_stack = stacks(self.teacher)[name]
            which = "target" if name == "decoder" and student.config.architecture == "encoder-decoder" else "input"
            for i, j in enumerate(layer_map(len(teacher_stack.layers), len(stack.layers), last=True)):
                hooks.append(stack.layers[i].register_forward_hook(
                    lambda m, a, out, w=which: captured["student"].append((out, w))))
                hooks.append(teacher_stack.layers[j].register_forward_hook(
                    lambda m, a, out: captured["teacher"].append(out)))
        return hooks
