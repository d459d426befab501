"""Each family really trains: a few hundred AdamW steps drive the loss on one tiny batch to ~0."""

import pytest
import torch

from llmcore.model import IGNORE, TransformerConfig, build_model

V, MASK = 32, 3


pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # 300 steps per family


def batch_for(family):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, V, (4, 16), generator=g)
    if family == "gpt":  # causal LM; the last row is padded on the right, its padding ignored by the loss
        mask = torch.ones_like(ids)
        mask[3, 10:] = 0
        return dict(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, IGNORE))
    if family == "bert":  # masked LM on ~25% of positions + next sentence prediction
        masked = torch.rand(ids.shape, generator=g) < 0.25
        masked[:, 1] = True
        return dict(input_ids=ids.masked_fill(masked, MASK), labels=ids.masked_fill(~masked, IGNORE),
                    token_type_ids=(torch.arange(16) >= 8).long().expand(4, 16),
                    next_sentence_label=torch.tensor([0, 1, 1, 0]))
    if family == "t5":  # span corruption: spans replaced by sentinels, the target lists them
        sentinels = torch.tensor([V - 1, V - 2])
        inputs = torch.cat((ids[:, :3], sentinels[:1].expand(4, 1), ids[:, 6:12], sentinels[1:].expand(4, 1),
                            ids[:, 14:]), dim=1)
        labels = torch.cat((sentinels[:1].expand(4, 1), ids[:, 3:6], sentinels[1:].expand(4, 1), ids[:, 12:14],
                            torch.ones(4, 1, dtype=torch.long)), dim=1)
        return dict(input_ids=inputs, labels=labels)
    # translation: the target is the reversed source; padded targets are ignored
    labels = ids.flip(1)[:, :12].clone()
    labels[2, 9:] = IGNORE
    return dict(input_ids=ids, labels=labels)


@pytest.mark.parametrize("family", ["gpt", "bert", "t5", "transformer"])
def test_each_family_overfits_a_tiny_batch(family):
    torch.manual_seed(0)
    model = build_model(TransformerConfig(family=family, vocab_size=V, d_model=64, n_heads=4, n_layers=2,
                                          d_ff=128, max_seq_len=32, dropout=0.0))
    batch = batch_for(family)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[0] > 2.5 and losses[-1] < 0.05, (losses[0], losses[-1])  # from chance (ln 32) to ~0
