"""Trivial baselines: copy-source, lead-k sentences, the frequent reply."""

from llmcore.finetune import baselines as B
from llmcore.finetune.formats import Example


def ex(source="", target="", task="summarization"):
    return Example(task, source, target, "t:1", source)


def test_copy_source():
    assert B.copy_source([ex("file %s not found", task="translation")]) == ["file %s not found"]


def test_lead_sentences():
    doc = "alarm() arranges a signal. It is old!  Is it?\n\nNew paragraph without stop\n\nLast one."
    assert B.sentences(doc) == ["alarm() arranges a signal.", "It is old!", "Is it?", "New paragraph without stop",
                                "Last one."]
    assert B.lead([ex(doc)]) == ["alarm() arranges a signal."]
    assert B.lead([ex(doc)], k=2) == ["alarm() arranges a signal. It is old!"]
    assert B.lead([ex("see /etc/hosts.conf for details. More.")]) == ["see /etc/hosts.conf for details."]


def test_frequent_reply_counts_first():
    train = [ex(target=t) for t in ["yes", "no idea", "yes", "no idea", "no idea", "maybe so"]]
    assert B.frequent_reply([ex(), ex()], train) == ["no idea", "no idea"]


def test_frequent_reply_ties_go_to_the_best_constant_answer():
    # no reply repeats: "the file" shares tokens with every reply, the others with one or none
    train = [ex(target=t) for t in ["open the file", "close the file", "the file", "zebra"]]
    assert B.pick_reply(train) == "the file"
