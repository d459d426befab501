"""Trivial baselines on the bundled sample's held-out (test) split: the floor a fine-tuned model must
clear, scored by the same metrics and split (llmcore.finetune.formats.split: 10 % validation, 10 % test).

- translation en->de, en->fr, de->en, fr->en: copy the source; BLEU, chrF.
- summarization: lead-1 (and lead-2, lead-3 beside it); ROUGE-1/2/L with stemming.
- dialogue: the frequent reply picked on the train split; token F1, ROUGE-L, distinct-1/2.

    python benchmarks/baselines.py

Prints one JSON line.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmcore import metrics
from llmcore.finetune import baselines as B
from llmcore.finetune import formats as F

SAMPLE = Path(__file__).resolve().parents[1] / "configs" / "sample"


def main() -> dict:
    out: dict = {"split": "test"}
    for a, b in [("en", "de"), ("en", "fr"), ("de", "en"), ("fr", "en")]:
        pair = "-".join(sorted([a, b], key=lambda lang: lang != "en"))
        test = F.split(F.load_translation(SAMPLE / "parallel" / f"{pair}.jsonl", a, b))["test"]
        preds, refs = B.copy_source(test), [ex.target for ex in test]
        out[f"translation_{a}-{b}"] = {"n": len(test), "baseline": "copy-source",
                                       "bleu": metrics.bleu(preds, refs), "chrf": metrics.chrf(preds, refs)}
    test = F.split(F.load_summarization(SAMPLE / "summarization.jsonl"))["test"]
    refs = [ex.target for ex in test]
    for k in (1, 2, 3):
        out[f"summarization_lead{k}"] = {"n": len(test), **metrics.rouge(B.lead(test, k), refs)}
    splits = F.split(F.load_dialogue(SAMPLE / "dialogue.jsonl"))
    test, refs = splits["test"], [ex.target for ex in splits["test"]]
    preds = B.frequent_reply(test, splits["train"])
    out["dialogue_frequent_reply"] = {
        "n": len(test), "reply": preds[0][:80], "token_f1": metrics.token_f1(preds, refs),
        "rougeL": metrics.rouge(preds, refs)["rougeL"],
        "distinct1": metrics.distinct(preds, 1), "distinct2": metrics.distinct(preds, 2),
        "reference_distinct1": metrics.distinct(refs, 1), "reference_distinct2": metrics.distinct(refs, 2),
    }
    return out


if __name__ == "__main__":
    print(json.dumps(json.loads(json.dumps(main()), parse_float=lambda s: round(float(s), 2))))
