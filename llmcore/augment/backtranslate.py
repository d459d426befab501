"""Back-translation (Sennrich et al. 2016) and paraphrase round trips through fine-tuned translation models.

- Synthetic pairs: a reverse model (target -> source) translates target-language sentences of the
  corpus; each (synthetic source, real target) pair is written as a line of the parallel file's format,
  `{<source_lang>: synthetic, <target_lang>: real, "synthetic": true, "origin": "<doc id>#<sentence>"}`,
  so `formats.load_translation` reads it and fine-tuning mixes it in (`synthetic_ratio`).
- Paraphrases: source-language sentences go source -> target (a forward model) -> source (the reverse
  model); each document's round-tripped sentences become one paraphrase document.

The models are fine-tuned translation models (`llmcore.finetune`): a given directory, or trained on the
parallel file's train split by `train_model` (the reverse task config of `BacktranslationConfig`).
Sentences are chosen by a hash of their text, so the choice is a uniform sample of distinct sentences
that does not depend on shard order, and memory stays bounded by `max_sentences`.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from llmcore.config import BacktranslationConfig, FinetuneTaskConfig, GenerationConfig
from llmcore.data.stage import read_rows
from llmcore.finetune.baselines import sentences
from llmcore.finetune.formats import Example, load_translation, split_of
from llmcore.finetune.predict import predict
from llmcore.finetune.run import FinetuneJob, run
from llmcore.finetune.spec import load_finetuned
from llmcore.manifest import atomic_write, atomic_write_json, relative_paths
from llmcore.train.runtime import pick_device

SYNTHETIC = "synthetic.jsonl"
PARAPHRASES = "paraphrases.jsonl"
TRAINED = "trained.json"  # written last in a model's run directory: the model is ready
TRANSLATED = "translate.json"  # written last by the translation step: the pairs and paraphrases are done


@dataclass(frozen=True)
class Sentence:
    text: str
    doc: str
    index: int  # position among the document's sentences

    @property
    def origin(self) -> str:
        return f"{self.doc}#{self.index}"


def _rank(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def choose_sentences(shards: Iterable[str | Path], lang: str, min_chars: int, max_chars: int, limit: int,
                     exclude: frozenset[str] = frozenset()) -> list[Sentence]:
    """Up to `limit` distinct sentences of the `lang` documents (whitespace collapsed, `min_chars` to
    `max_chars` long, not in `exclude`): those with the lowest text hash, each from its first origin in
    (doc id, index) order. The same answer for any shard order or sharding."""
    heap: list[tuple[int, str]] = []  # (-rank, text): the kept texts, the highest rank on top
    first: dict[str, Sentence] = {}
    for shard in shards:
        for row in read_rows(shard, columns=["id", "text", "lang"]):
            if row["lang"] != lang:
                continue
            for i, raw in enumerate(sentences(row["text"])):
                text = " ".join(raw.split())
                if not min_chars <= len(text) <= max_chars or text in exclude:
                    continue
                sentence = Sentence(text, row["id"], i)
                if text in first:
                    first[text] = min(first[text], sentence, key=lambda s: (s.doc, s.index))
                    continue
                rank = _rank(text)
                if len(heap) < limit:
                    heapq.heappush(heap, (-rank, text))
                elif rank < -heap[0][0]:
                    del first[heapq.heapreplace(heap, (-rank, text))[1]]
                else:
                    continue
                first[text] = sentence
    return sorted(first.values(), key=lambda s: _rank(s.text))


def held_out_targets(task: FinetuneTaskConfig) -> frozenset[str]:
    """The target-language side of the parallel file's validation and test pairs (by the task's split):
    never back-translated, so no evaluation sentence reaches fine-tuning as a synthetic pair."""
    pairs = load_translation(task.path, task.source_lang, task.target_lang)
    held = (ex.source for ex in pairs if split_of(ex, task.validation_fraction, task.test_fraction) != "train")
    return frozenset(" ".join(text.split()) for text in held)


def direction(cfg: BacktranslationConfig, kind: str) -> FinetuneTaskConfig:
    """The task that trains the `reverse` model (target -> source), or the `forward` one trained the same way."""
    if kind == "reverse":
        return cfg.reverse
    src, tgt = cfg.source_lang, cfg.target_lang
    return cfg.reverse.model_copy(update={"name": f"forward-{src}-{tgt}", "source_lang": src, "target_lang": tgt})


def train_model(task: FinetuneTaskConfig, run_dir: str | Path) -> Path:
    """Fine-tune (or resume, from the checkpoints in run_dir) the translation model of `task`; writes
    TRAINED last. Returns the exported model directory."""
    run_dir = Path(run_dir)
    summary = run(FinetuneJob(task, str(run_dir)))
    atomic_write_json(run_dir / TRAINED, relative_paths(summary, run_dir))
    return run_dir / summary["model"]


def translate(model_dir: str | Path, texts: Sequence[str], src: str, tgt: str, generation: GenerationConfig,
              device: str = "auto") -> list[str]:
    """`texts` (in `src`) translated to `tgt` by the fine-tuned model in model_dir, in order."""
    ft = load_finetuned(model_dir, pick_device(device))
    if (ft.spec.task, ft.spec.source_lang, ft.spec.target_lang) != ("translation", src, tgt):
        raise ValueError(f"{model_dir}: a {ft.spec.task} model {ft.spec.source_lang}->{ft.spec.target_lang}; "
                         f"{src}->{tgt} translation was asked for")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with less padding
    examples = [Example("translation", texts[i], "", "", texts[i], src_lang=src, tgt_lang=tgt) for i in order]
    outputs = [""] * len(texts)
    for i, out in zip(order, predict(ft, examples, generation)):
        outputs[i] = out
    return outputs


def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    atomic_write(path, "".join(lines).encode())
    return len(lines)


def backtranslate(out_dir: str | Path, shards: Sequence[str], cfg: BacktranslationConfig, reverse: str,
                  forward: str | None = None) -> dict:
    """Writes SYNTHETIC (and PARAPHRASES when a forward model is given) into out_dir; returns the counts."""
    out_dir, src, tgt = Path(out_dir), cfg.source_lang, cfg.target_lang
    device = cfg.reverse.train.device
    chosen = choose_sentences(shards, tgt, cfg.min_chars, cfg.max_chars, cfg.max_sentences, held_out_targets(cfg.reverse))
    outputs = translate(reverse, [s.text for s in chosen], tgt, src, cfg.generation, device)
    # an empty translation (eos at once) would be a pair load_translation refuses: left out, counted
    pairs = ({src: out, tgt: s.text, "synthetic": True, "origin": s.origin} for s, out in zip(chosen, outputs) if out)
    summary = {"sentences": len(chosen), "synthetic_pairs": _write_jsonl(out_dir / SYNTHETIC, pairs),
               "reverse_model": str(reverse)}
    if forward:
        summary.update(paraphrase(out_dir / PARAPHRASES, shards, cfg, reverse, forward), forward_model=str(forward))
    return relative_paths(summary, out_dir)


def paraphrase(path: Path, shards: Sequence[str], cfg: BacktranslationConfig, reverse: str, forward: str) -> dict:
    """Source sentences round-tripped source -> target -> source; one line per document, its changed
    sentences in order: `{"augmented_from": <id>, "text": ..., "sentences": [<origin>, ...]}`."""
    src, tgt, device = cfg.source_lang, cfg.target_lang, cfg.reverse.train.device
    chosen = choose_sentences(shards, src, cfg.min_chars, cfg.max_chars, cfg.paraphrase_sentences)
    pivots = translate(forward, [s.text for s in chosen], src, tgt, cfg.generation, device)
    back = translate(reverse, pivots, tgt, src, cfg.generation, device)
    by_doc: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for s, pivot, text in zip(chosen, pivots, back):
        if pivot and text and text != s.text:  # an unchanged round trip adds nothing
            by_doc[s.doc].append((s.index, text))
    docs = ({"augmented_from": doc, "text": " ".join(t for _, t in sorted(found)),
             "sentences": [f"{doc}#{i}" for i, _ in sorted(found)]} for doc, found in sorted(by_doc.items()))
    written = _write_jsonl(path, docs)
    return {"paraphrase_sentences": len(chosen), "paraphrased": sum(map(len, by_doc.values())),
            "paraphrase_documents": written}
