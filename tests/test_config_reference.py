"""docs/config.md is generated from llmcore/config.py: it must be what the generator writes now."""

from __future__ import annotations

import re

from llmcore.config import PipelineConfig
from llmcore.config_reference import COMMAND, DOC, models, reference


def test_docs_config_md_is_current():
    expected = reference()
    actual = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert actual == expected, f"docs/config.md is out of date with llmcore/config.py: regenerate it with `{COMMAND}`"


def test_every_field_of_every_section_is_listed():
    text = reference()
    paths = re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE) + re.findall(r"^## (\S+)$", text, re.MULTILINE)
    names = {part.removesuffix("[]") for path in paths for part in path.split(".")}
    for model in models(PipelineConfig):
        for name in model.model_fields:
            assert name in names, f"{model.__name__}.{name} is missing from the reference"


def test_defaults_are_the_codes():
    from llmcore.config import CleanConfig, LanguageConfig

    text = reference()
    for model, path in [(LanguageConfig, "data.language"), (CleanConfig, "data.clean")]:
        for name, info in model.model_fields.items():
            if isinstance(info.default, (int, float)) and not isinstance(info.default, bool):
                assert f"| `{path}.{name}` |" in text
                row = next(line for line in text.splitlines() if line.startswith(f"| `{path}.{name}` |"))
                assert f"`{info.default!r}`" in row, row


def test_a_default_set_by_the_parent_section_wins():
    """finetune[].train is a TrainConfig whose defaults are set by FinetuneTaskConfig, not TrainConfig's own."""
    from llmcore.config import FinetuneTaskConfig

    text = reference()
    steps = FinetuneTaskConfig.model_fields["train"].default.max_steps
    assert f"| `finetune[].train.max_steps` | `int` | `{steps}` |" in text
