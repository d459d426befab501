"""The pipeline configuration: pydantic models for every section, loaded from one YAML file.

Unknown keys are errors (a typo must not silently fall back to a default). Relative paths in a
config file are resolved against the file's own directory, so a config works from any cwd.
`load_config` then runs the pre-flight checks (`preflight`: the files named, metrics measured, model
sizes), so that a config `llmpipe validate` passes does not fail on a setting after hours of work.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from llmcore.stage import OUTPUT_ONLY, POLICY


class Section(BaseModel):
    # hide_input_in_errors: an error about a refused secret must not print the secret
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic reads true as 1 and false as 0 for a number: `max_steps: true` would train one step."""
        annotation = cls.model_fields[info.field_name].annotation
        types = get_args(annotation) or (annotation,)
        if isinstance(value, bool) and bool not in types and {int, float} & set(types):
            raise ValueError(f"{str(value).lower()} is not a number: write the number this setting takes"
                             + (" (or null)" if type(None) in types else ""))
        return value


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class SourceConfig(Section):
    """One input: a file, a directory, or a glob of files of one format, or a HF dataset."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="short name, part of every document id")
    format: Literal["jsonl", "text", "parquet", "csv", "hf"]
    path: str | None = Field(None, description="file, directory or glob; for hf: a save_to_disk directory")
    text_field: str = Field("text", description="column / JSON field holding the text")
    id_field: str | None = Field(None, description="column with the source's own ids; default: file and line")
    text_unit: Literal["line", "file"] = Field("line", description="text format: a document per line or per file")
    hf_load: dict[str, Any] | None = Field(None, description="datasets.load_dataset(**hf_load), for hf without path; "
                                           "no token in it: name it with token_env or token_secret")
    hf_split: str = "train"
    # A config is hashed into stage keys, dumped into manifests and stored as flow-run parameters: secrets go by name.
    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", json_schema_extra=OUTPUT_ONLY,
                                  description="hf_load's HF token: the environment variable holding it where the run runs")
    token_secret: str | None = Field(None, pattern=r"^[a-z0-9-]+$", json_schema_extra=OUTPUT_ONLY,
                                     description="hf_load's HF token: the Prefect Secret block holding it")

    @field_validator("hf_load")
    @classmethod
    def _check_no_secret(cls, hf_load: dict[str, Any] | None) -> dict[str, Any] | None:
        where = _secret_in(hf_load, "hf_load")
        if where:
            raise ValueError(f"{where} holds a secret, which a config would store in plain text (flow-run parameters, "
                             "manifests): remove it and name the HF token instead, token_env: HF_TOKEN (an environment "
                             "variable) or token_secret: BLOCK (a Prefect Secret block)")
        return hf_load

    @model_validator(mode="after")
    def _check_location(self) -> SourceConfig:
        if self.format == "hf":
            if (self.path is None) == (self.hf_load is None):
                raise ValueError("an hf source needs exactly one of `path` (a save_to_disk dir) or `hf_load`")
        elif self.path is None:
            raise ValueError(f"a {self.format} source needs `path`")
        if (self.token_env or self.token_secret) and self.hf_load is None:
            raise ValueError("token_env / token_secret name the token of hf_load's download: set them only with hf_load")
        if self.token_env and self.token_secret:
            raise ValueError("give the token one way: token_env or token_secret, not both")
        if _secret_in(self.token_env, "token_env"):
            raise ValueError("token_env takes the name of an environment variable holding the token, not the token itself")
        return self


SECRET_KEY = re.compile(r"token|passw|secret|api_?key|credential", re.IGNORECASE)
HF_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{30,}")  # the shape of a Hugging Face access token


def _secret_in(value: Any, where: str) -> str | None:
    """Where in `value` (nested dicts and lists) a secret is: a key named like one with a value other than null, true or
    false (`token: true`: the login's token), or a string shaped like an HF token."""
    if isinstance(value, str):
        return where if HF_TOKEN_SHAPE.search(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]"
        if isinstance(key, str) and SECRET_KEY.search(key) and item not in (None, True, False):
            return inner
        found = _secret_in(item, inner)
        if found:
            return found
    return None


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(min_length=1)
    shard_rows: int = Field(5000, gt=0, description="documents per output Parquet shard")
    invalid_utf8: Literal["quarantine", "replace"] = Field(
        "quarantine", description="a line with invalid UTF-8: quarantine it, or decode with U+FFFD"
    )

    @model_validator(mode="after")
    def _check_source_names(self) -> IngestConfig:
        names = [src.name for src in self.sources]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"two sources are named {twice[0]!r}: the name starts every document id, so their ids "
                             "would collide; give each source its own name")
        return self


class PiiConfig(Section):
    emails: bool = False
    ips: bool = False
    phones: bool = False


class NamedFilterConfig(Section):
    """A published quality filter: off unless enabled, for the languages its definition is for."""

    enabled: bool = Field(False, description="run this filter in the clean stage (off by default)")
    languages: list[str] = Field(
        ["en"], description="the languages it judges, by a clean-time guess from function words of en de fr es it pt nl "
        "(mainly non-Latin script: another language); a document with no evident language is judged too; [] = every document"
    )


class GopherQualityConfig(NamedFilterConfig):
    """Gopher quality rules (Rae et al. 2021, appendix A), datatrove's GopherQualityFilter; null turns a rule off."""

    min_doc_words: int | None = Field(50, ge=0, description="fewer words (not counting punctuation-only ones): gopher_short_doc")
    max_doc_words: int | None = Field(100_000, ge=0, description="more words: gopher_long_doc")
    min_avg_word_length: float | None = Field(3, ge=0, description="lower mean word length: gopher_below_avg_threshold")
    max_avg_word_length: float | None = Field(10, ge=0, description="higher mean word length: gopher_above_avg_threshold")
    max_symbol_word_ratio: float | None = Field(
        0.1, ge=0, description="more '#', or more ellipses, per word: gopher_too_many_hashes / gopher_too_many_ellipsis"
    )
    max_bullet_lines_ratio: float | None = Field(
        0.9, ge=0, le=1, description="larger share of lines starting with '•' or '-': gopher_too_many_bullets"
    )
    max_ellipsis_lines_ratio: float | None = Field(
        0.3, ge=0, le=1, description="larger share of lines ending in '...' or '…': gopher_too_many_end_ellipsis"
    )
    min_alpha_words_ratio: float | None = Field(
        0.8, ge=0, le=1, description="smaller share of words with a letter: gopher_below_alpha_threshold"
    )
    min_stop_words: int | None = Field(2, ge=0, description="fewer distinct stop words present: gopher_too_few_stop_words")
    stop_words: list[str] = Field(["the", "be", "to", "of", "and", "that", "have", "with"],
                                  description="the stop words (Gopher's English ones; case-sensitive, as in datatrove)")


class GopherRepetitionConfig(NamedFilterConfig):
    """Gopher repetition rules (Rae et al. 2021, table A1), datatrove's GopherRepetitionFilter; null turns a rule off."""

    dup_para_frac: float | None = Field(0.3, ge=0, le=1, description="share of paragraphs repeating an earlier one: "
                                        "gopher_dup_para_frac")
    dup_para_char_frac: float | None = Field(0.2, ge=0, le=1, description="share of characters in repeated paragraphs: "
                                             "gopher_dup_para_char_frac")
    dup_line_frac: float | None = Field(0.3, ge=0, le=1, description="share of lines repeating an earlier one: "
                                        "gopher_dup_line_frac")
    dup_line_char_frac: float | None = Field(0.2, ge=0, le=1, description="share of characters in repeated lines: "
                                             "gopher_dup_line_char_frac")
    top_n_grams: dict[int, float] = Field({2: 0.2, 3: 0.18, 4: 0.16}, description="n -> most the most frequent word "
                                          "n-gram may cover, as a share of characters: gopher_top_<n>_gram")
    dup_n_grams: dict[int, float] = Field(
        {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="n -> most the repeated word n-grams may cover, as a share of characters: gopher_duplicated_<n>_n_grams",
    )


class C4Config(NamedFilterConfig):
    """C4's rules (Raffel et al. 2020, section 2.2), datatrove's C4QualityFilter: lines go, then maybe the page."""

    filter_no_terminal_punct: bool = Field(True, description="drop lines not ending in . ? ! \" ' (or ending in ...)")
    min_words_per_line: int | None = Field(3, ge=0, description="drop lines with fewer words")
    max_word_length: int | None = Field(1000, ge=0, description="drop lines with a longer word")
    remove_citations: bool = Field(True, description="remove [1], [edit], [citation needed] from lines")
    filter_javascript: bool = Field(True, description="drop lines mentioning javascript")
    filter_policy: bool = Field(True, description="drop lines mentioning terms of use, privacy / cookie policy, cookies")
    filter_lorem_ipsum: bool = Field(True, description="a kept line with 'lorem ipsum': c4_lorem_ipsum")
    filter_curly_bracket: bool = Field(True, description="a kept line with '{': c4_curly_bracket")
    min_num_sentences: int | None = Field(5, ge=0, description="fewer sentences in the kept lines: c4_too_few_sentences")
    remove_lines: bool = Field(True, description="a kept document keeps only the lines C4 keeps (as C4 and datatrove "
                               "do), and the FineWeb filter judges those; false: the filter only drops documents")


class FineWebConfig(NamedFilterConfig):
    """FineWeb's own rules (Penedo et al. 2024), datatrove's FineWebQualityFilter."""

    line_punct_thr: float = Field(0.12, ge=0, le=1, description="smaller share of lines ending in punctuation: "
                                  "fineweb_line_punct_ratio")
    line_punct_exclude_zero: bool = Field(False, description="a document with no such line at all passes that rule")
    short_line_length: int = Field(30, ge=0, description="a line of at most this many characters is short")
    short_line_thr: float = Field(0.67, ge=0, le=1, description="larger share of short lines: fineweb_short_line_ratio")
    char_duplicates_ratio: float = Field(0.01, ge=0, le=1, description="larger share of characters in repeated lines: "
                                         "fineweb_char_dup_ratio")
    new_line_ratio: float = Field(0.3, ge=0, description="more newlines per word: fineweb_list_ratio")


class CleanConfig(Section):
    """Normalisation, then quality filters in the Gopher / C4 tradition, then the published Gopher, C4 and FineWeb
    filters by name (each off unless enabled; llmcore/data/quality.py)."""

    strip_html: bool = False
    min_chars: int = Field(50, ge=0)
    max_chars: int = Field(100_000, gt=0)
    min_words: int = Field(5, ge=0)
    min_mean_word_len: float = Field(2.0, ge=0)
    max_mean_word_len: float = Field(15.0, gt=0)
    max_symbol_ratio: Fraction = Field(0.3, description="share of characters that are neither letters, digits nor space")
    max_dup_line_frac: Fraction = Field(0.3, description="share of lines that repeat an earlier line")
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    c4: C4Config = C4Config()
    fineweb: FineWebConfig = FineWebConfig()
    pii: PiiConfig = PiiConfig()

    @model_validator(mode="after")
    def _check_ranges(self) -> CleanConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars})")
        if self.min_mean_word_len > self.max_mean_word_len:
            raise ValueError("min_mean_word_len is above max_mean_word_len")
        return self


class LanguageConfig(Section):
    allowed: list[str] = Field(min_length=1, description="ISO 639-1 codes to keep, e.g. [en, de]")
    min_prob: Fraction = Field(0.8, description="drop documents whose top language is less likely than this")
    prefix_chars: int = Field(1000, gt=0, description="classify only this many leading characters")
    seed: int = 0
    workers: int = Field(0, ge=0, json_schema_extra=OUTPUT_ONLY, description="processes classifying in parallel; 0 = one per CPU core")

    @field_validator("allowed")
    @classmethod
    def _check_known(cls, allowed: list[str]) -> list[str]:
        from langdetect.detector_factory import PROFILES_DIRECTORY  # the languages the language stage can answer

        from llmcore.data.language import UNKNOWN

        known = sorted(f for f in os.listdir(PROFILES_DIRECTORY) if not f.startswith(".")) + [UNKNOWN]  # und: no text to detect
        unknown = [code for code in allowed if code not in known]
        if unknown:
            raise ValueError(f"{unknown} not among the languages langdetect identifies; use codes from {known}")
        return allowed


class DedupConfig(Section):
    """Exact duplicates (normalized text), then near duplicates: MinHash + LSH candidates, kept greedily in keep
    order (a document goes when an earlier kept one is its copy or verified near copy)."""

    ngram: int = Field(5, gt=0, description="words per shingle")
    num_perm: int = Field(256, ge=8, le=1024, description="MinHash permutations; 256 estimates Jaccard within ~0.02")
    seed: int = Field(1, description="seed of the MinHash permutations (datasketch's default: 1)")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="estimated Jaccard from which documents are near duplicates")
    recall_weight: Fraction = Field(
        0.9, description="weight of missed pairs against spurious candidates when choosing LSH bands and rows"
    )
    verify: bool = Field(True, description="check candidate pairs by estimated Jaccard (off: every LSH candidate is a duplicate)")
    keep: Literal["first", "longest"] = Field("first", description="representative: first in corpus order, or longest text")
    sort_memory_mb: int = Field(256, gt=0, json_schema_extra=OUTPUT_ONLY,
                                description="memory for sorting bucket and hash records; more spills to disk")


class TokenizerConfig(Section):
    """The vocabulary: trained with HF `tokenizers` on a bounded sample, or an existing tokenizer.json."""

    family: Literal["gpt", "bert", "t5"] = Field(
        "gpt", description="gpt: byte-level BPE; bert: WordPiece; t5: Unigram (each with its special tokens)"
    )
    vocab_size: int = Field(8000, ge=300, le=1_000_000, description="target vocabulary size (t5 adds 100 sentinels)")
    min_frequency: int = Field(2, ge=1, description="pairs / words seen fewer times are not merged / kept")
    sample_docs: int = Field(20_000, gt=0, description="documents drawn (seeded, without replacement) to train on")
    seed: int = 0
    path: str | None = Field(None, description="an existing tokenizer.json to use instead of training one")
    refit: bool = Field(False, json_schema_extra=POLICY,
                        description="false: a grown corpus keeps the tokenizer this data root trained with these settings "
                                    "(old token shards stay valid); true: train a new one on the current corpus")


class TokenizeConfig(Section):
    """Arrow token shards: one document per row, split by a stable hash of the document id."""

    validation_fraction: Fraction = Field(0.05, description="share of documents (by id hash) in the validation split")
    batch_docs: int = Field(1000, gt=0, description="documents per encode_batch call and per Arrow record batch")


class RunnerConfig(Section):
    """How per-shard tasks are spread: threads in-process, or an existing / local Dask cluster."""

    kind: Literal["threads", "dask"] = Field("threads", json_schema_extra=OUTPUT_ONLY)
    workers: int = Field(2, gt=0, json_schema_extra=OUTPUT_ONLY)
    dask_address: str | None = Field(None, json_schema_extra=OUTPUT_ONLY, description="scheduler address; None starts a LocalCluster")


class DataConfig(Section):
    ingest: IngestConfig
    clean: CleanConfig = CleanConfig()
    language: LanguageConfig
    dedup: DedupConfig = DedupConfig()
    augment: AugmentConfig = Field(default_factory=lambda: AugmentConfig(), description="back-translation and EDA (off by default)")
    tokenizer: TokenizerConfig = TokenizerConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    runner: RunnerConfig = RunnerConfig()


class ModelConfig(Section):
    """The network to pretrain: one llmcore TransformerConfig family; the vocabulary comes from the tokenizer."""

    family: Literal["gpt", "bert", "t5"] = Field(
        "gpt", description="gpt: causal LM; bert: MLM + next sentence prediction; t5: span corruption (encoder-decoder)"
    )
    d_model: int = Field(128, gt=0)
    n_heads: int = Field(4, gt=0)
    n_layers: int = Field(2, gt=0, description="layers (the encoder's in t5)")
    n_decoder_layers: int | None = Field(None, gt=0, description="t5 decoder layers; default n_layers")
    d_ff: int | None = Field(None, gt=0, description="feed-forward width; default 4 * d_model")
    max_seq_len: int | None = Field(None, gt=0, description="position table size; default pretrain.block_size")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    positions: Literal["learned", "sinusoidal", "rotary", "relative"] | None = Field(None, description="default: the family's")
    activation: Literal["relu", "gelu", "gelu_tanh", "swiglu", "geglu"] | None = Field(None, description="default: the family's")
    vocab_size: int | None = Field(
        None, gt=0, description="default: the tokenizer's; larger pads the embedding (GPUs like multiples of 64), smaller is refused"
    )

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads}): each head takes "
                             "d_model / n_heads dimensions; make d_model a multiple of n_heads")
        return self


class EarlyStoppingConfig(Section):
    metric: str = Field("val_loss", description="an evaluation metric: val_loss or val_ppl")
    mode: Literal["min", "max"] = "min"
    patience: int | None = Field(None, ge=1, description="evaluations without improvement before stopping; null: never stop early")
    min_delta: float = Field(0.0, ge=0.0, description="an improvement smaller than this does not count")


class DistributedConfig(Section):
    """More than one process in all: the pretrain task launches torchrun (DDP, or FSDP2 on GPUs)."""

    nproc_per_node: int = Field(1, ge=1, description="processes on this node (one per GPU)")
    nnodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0, json_schema_extra=OUTPUT_ONLY)
    rdzv_endpoint: str = Field("127.0.0.1:29500", json_schema_extra=OUTPUT_ONLY, description="host:port of node 0, reachable by every node")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="fsdp: FSDP2 fully_shard of every layer")
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="auto: nccl on GPUs, gloo on CPUs")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


class TrainConfig(Section):
    """The training loop, shared by pretraining and fine-tuning (llmcore.train)."""

    max_steps: int = Field(150, gt=0, description="optimizer steps")
    batch_size: int = Field(8, gt=0, description="examples per process and micro-step")
    grad_accum: int = Field(1, gt=0, description="micro-steps per optimizer step")
    lr: float = Field(2e-3, ge=0.0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(15, ge=0)
    min_lr_ratio: Fraction = Field(0.1, description="the decayed learning rate's floor, as a share of lr")
    weight_decay: float = Field(0.1, ge=0.0)
    no_decay: list[Literal["norm", "bias", "embedding"]] = Field(
        ["norm", "bias", "embedding"], description="parameter kinds that AdamW does not decay"
    )
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0.0)
    grad_clip: float | None = Field(1.0, gt=0.0, description="max global gradient norm; null: no clipping")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on GPUs and on CPUs with native bf16, fp32 otherwise"
    )
    compile: bool = Field(False, description="torch.compile the model")
    activation_checkpointing: bool = Field(False, description="recompute each layer in the backward pass to save memory")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_every: int = Field(50, gt=0, description="steps between evaluations on the validation split")
    eval_batches: int = Field(10, gt=0, description="validation batches per evaluation (per process)")
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    checkpoint_every: int = Field(50, gt=0, json_schema_extra=OUTPUT_ONLY, description="steps between checkpoints (where a retry resumes)")
    keep_checkpoints: int = Field(2, ge=1, json_schema_extra=OUTPUT_ONLY, description="newest checkpoints kept (the best one is kept too)")
    save_best: bool = Field(True, description="checkpoint every evaluation that improves the early-stopping metric")
    log_every: int = Field(10, gt=0, json_schema_extra=OUTPUT_ONLY)
    seed: int = 0
    deterministic: bool = Field(False, description="deterministic kernels (bit-identical resume on CPU)")
    peak_tflops: float | None = Field(None, gt=0.0, json_schema_extra=OUTPUT_ONLY,
                                      description="per-device peak for MFU; default: known GPUs, estimated CPUs")
    distributed: DistributedConfig = DistributedConfig()


class PretrainConfig(Section):
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    block_size: int = Field(128, ge=8, description="tokens per example (t5: encoder tokens)")
    objective: Literal["auto", "clm", "mlm", "nsp", "span"] = Field(
        "auto", description="auto: clm for gpt, nsp (MLM + NSP) for bert, span corruption for t5"
    )
    on_new_data: Literal["continue", "restart", "skip"] = Field(
        "continue", json_schema_extra=POLICY,
        description="when the corpus grew since this data root's last model with these settings: continue it over the new "
                    "token shards only (steps in proportion to their tokens), restart from scratch on the whole corpus, "
                    "or skip (keep that model)",
    )

    @model_validator(mode="after")
    def _check_objective(self) -> PretrainConfig:
        allowed = {"gpt": ("clm",), "bert": ("mlm", "nsp"), "t5": ("span",)}[self.model.family]
        if self.objective != "auto" and self.objective not in allowed:
            raise ValueError(f"objective {self.objective!r} does not train a {self.model.family} model; use one of {list(allowed)} or auto")
        return self


class GenerationConfig(Section):
    """Decoding for validation metrics, evaluation and back-translation (llmcore.generate)."""

    num_beams: int = Field(1, ge=1, description="1: greedy; more: beam search")
    max_new_tokens: int = Field(64, gt=0)
    min_new_tokens: int = Field(0, ge=0, description="tokens generated before EOS is allowed (no empty outputs)")
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = Field(0, ge=0, description="no n-gram twice in an output (its source may still be copied); 0: off")
    batch_size: int = Field(32, gt=0, description="examples decoded at once")


class FreezeConfig(Section):
    """Parameters left untouched by fine-tuning."""

    embeddings: bool = Field(False, description="token and position embeddings (a tied LM head with them)")
    first_layers: int = Field(0, ge=0, description="the first N layers of the decoder-only stack, or of the encoder")
    encoder: bool = Field(False, description="the whole encoder of an encoder-decoder model")


class FinetuneTaskConfig(Section):
    """One downstream task: examples from a JSONL file (formats: llmcore/finetune/formats.py), a model to
    start from, what to freeze, the training loop, and the decoding used for validation metrics."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="names the run: finetune/<name>-<key>")
    task: Literal["translation", "summarization", "dialogue"]
    path: str = Field(description="a JSONL file of the task's records")
    source_lang: str | None = Field(None, description="translation: the source side's field, e.g. en")
    target_lang: str | None = Field(None, description="translation: the target side's field, e.g. de")
    init: str = Field("pretrained", description="pretrained: the pipeline's pretrain checkpoint; scratch: a new model "
                      "(`model`, with a tokenizer trained on the task's texts); or a directory holding an llmcore or "
                      "Hugging Face checkpoint with its tokenizer.json")
    model: ModelConfig = Field(ModelConfig(), description="init: scratch only")
    vocab_size: int = Field(4000, ge=300, description="init: scratch only: the tokenizer trained on the task's texts")
    max_source_length: int = Field(64, gt=1, description="source tokens kept (incl. the task token)")
    max_target_length: int = Field(64, gt=1, description="target tokens kept (incl. eos)")
    validation_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1
    validation_examples: int = Field(100, gt=0, description="validation examples decoded at each evaluation")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="the model's dropout while fine-tuning (a few "
                                  "thousand pairs overfit fast); null: the checkpoint's")
    freeze: FreezeConfig = FreezeConfig()
    lr_scales: dict[str, float] = Field({}, description="parameter-name prefix -> multiplier of train.lr (longest prefix "
                                        "wins), e.g. {tok_emb: 0.1, encoder: 0.5}")
    synthetic_ratio: float = Field(0.0, ge=0.0, description="translation: back-translated pairs (data.augment) mixed in, "
                                   "per real training pair; 0: none")
    train: TrainConfig = TrainConfig(max_steps=200, lr=1e-3, warmup_steps=20, eval_every=50, checkpoint_every=50)
    generation: GenerationConfig = GenerationConfig()

    @model_validator(mode="after")
    def _check_task(self) -> FinetuneTaskConfig:
        if self.task == "translation" and not (self.source_lang and self.target_lang):
            raise ValueError("a translation task needs source_lang and target_lang (the JSONL fields of each side)")
        if self.task != "translation" and self.synthetic_ratio:
            raise ValueError("synthetic_ratio mixes back-translated pairs into translation tasks only")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(f"validation_fraction + test_fraction is {self.validation_fraction + self.test_fraction:g}: no "
                             "example would be left to train on; keep their sum below 1")
        return self


class BacktranslationConfig(Section):
    """Synthetic translation pairs (Sennrich et al. 2016): a reverse model (target -> source) translates the
    corpus's target-language sentences; each (synthetic source, real target) pair is marked synthetic."""

    pairs: str = Field(description="the parallel JSONL that a reverse model trains on (its train split only)")
    source_lang: str = Field(description="the forward direction's source, e.g. en")
    target_lang: str = Field(description="the forward direction's target, e.g. de: its sentences are back-translated")
    model: str | None = Field(None, description="a fine-tuned reverse model directory (with finetune.json); null: train one")
    reverse: FinetuneTaskConfig = Field(description="how the reverse model (and a paraphrase forward model) trains: "
                                        "name, task, path and languages are filled in, init defaults to scratch; "
                                        "omitted: the defaults of a scratch translation task")
    max_sentences: int = Field(1000, gt=0, description="target-language sentences back-translated")
    min_chars: int = Field(20, gt=0)
    max_chars: int = Field(200, gt=0)
    paraphrase_sentences: int = Field(0, ge=0, description="source-language sentences round-tripped (source -> target "
                                      "-> source) into paraphrase documents; needs a forward model, trained the same way")
    generation: GenerationConfig = GenerationConfig()

    @model_validator(mode="before")
    @classmethod
    def _fill_reverse(cls, data: Any) -> Any:
        """A user writes only how the reverse model trains; what it translates comes from this section."""
        if not isinstance(data, dict):
            return data
        reverse = data.get("reverse") or {}
        reverse = reverse.model_dump() if isinstance(reverse, BaseModel) else dict(reverse)
        src, tgt = data.get("source_lang"), data.get("target_lang")
        reverse.setdefault("init", "scratch")
        filled = {"name": f"reverse-{tgt}-{src}", "task": "translation", "path": data.get("pairs"),
                  "source_lang": tgt, "target_lang": src}
        return {**data, "reverse": {**reverse, **filled}}

    @model_validator(mode="after")
    def _check(self) -> BacktranslationConfig:
        if self.source_lang == self.target_lang:
            raise ValueError("source_lang and target_lang must differ")
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars})")
        if self.reverse.init == "pretrained":
            raise ValueError("reverse.init: the data flow runs before pretraining; use scratch or a checkpoint directory")
        return self


class EdaConfig(Section):
    """EDA edits (llmcore/augment/eda.py): noisy copies of documents, marked augmented."""

    copies: int = Field(1, ge=1, description="copies per chosen document")
    fraction: Fraction = Field(0.1, description="share of documents (seeded choice) that get copies")
    rate: Fraction = Field(0.1, description="share of a copy's words edited")
    synonyms: str | None = Field(None, description="a word<TAB>syn1,syn2 table; default: the shipped English one")
    seed: int = 0


class AugmentConfig(Section):
    backtranslation: BacktranslationConfig | None = None
    eda: EdaConfig | None = None


class EvaluateConfig(Section):
    """Scoring each fine-tuned model on its task's test split (flows/evaluate.py)."""

    generation: GenerationConfig = GenerationConfig(num_beams=4)
    max_examples: int | None = Field(None, gt=0, description="test examples scored per task; null: all")
    examples_shown: int = Field(5, ge=0, description="example outputs per task in the markdown artifact")


class KDConfig(Section):
    """How a student learns from its teacher (llmcore/distill/losses.py)."""

    temperature: float = Field(2.0, gt=0.0, description="softens both distributions; the soft term is scaled by T^2")
    alpha: Fraction = Field(0.5, description="weight of the soft (teacher) term; 1 - alpha on the labels; 0: no teacher")
    hidden_weight: float = Field(0.0, ge=0.0, description="weight of a hidden-state loss on mapped layers (same d_model only)")
    hidden_loss: Literal["cosine", "mse"] = "cosine"
    sequence: bool = Field(False, description="sequence-level KD (Kim & Rush 2016): train on the teacher's beam outputs "
                           "over the training sources instead of the references")
    sequence_generation: GenerationConfig = Field(GenerationConfig(num_beams=4, no_repeat_ngram_size=3),
                                                  description="how the teacher decodes the training sources")


class StudentConfig(Section):
    """One student: the teacher's architecture, fewer layers and/or narrower; unset fields keep the teacher's."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="names the student's run and its row in the tables")
    n_layers: int | None = Field(None, gt=0, description="layers (the encoder's in t5)")
    n_decoder_layers: int | None = Field(None, gt=0, description="t5 decoder layers")
    d_model: int | None = Field(None, gt=0)
    n_heads: int | None = Field(None, gt=0)
    d_ff: int | None = Field(None, gt=0, description="default: the teacher's d_ff / d_model ratio")
    init: Literal["teacher", "fresh"] = Field("teacher", description="teacher: its embeddings and every k-th layer "
                                              "(same width only); fresh: random")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="null: the teacher's")
    kd: KDConfig = KDConfig()
    train: TrainConfig = TrainConfig(max_steps=2000, lr=3e-3, warmup_steps=30, eval_every=400, checkpoint_every=400)


class PruneConfig(Section):
    """Magnitude pruning of the linear layers' weights (global threshold), then fine-tuning with the zeros held."""

    sparsity: Fraction = Field(0.5, description="share of the linear layers' weights set to zero")
    recovery: TrainConfig | None = Field(TrainConfig(max_steps=400, lr=1e-3, warmup_steps=20, eval_every=200,
                                                     checkpoint_every=200),
                                         description="fine-tuning after pruning (distilled from the unpruned model); null: none")
    kd: KDConfig = KDConfig()


class CompressConfig(Section):
    """Compressed copies of the teacher and the students (llmcore/distill/compress.py)."""

    models: list[str] = Field(["teacher"], description="what to compress: teacher and/or student names")
    int8: bool = Field(True, description="dynamic int8 quantization of the linear layers (and int8 embeddings): CPU inference")
    half: list[Literal["bf16", "fp16"]] = Field(["bf16"], description="weights exported in these dtypes")
    prune: PruneConfig | None = None


class SpeedConfig(Section):
    """How CPU generation speed is measured for the side-by-side table: the same examples, batch and decoding for all."""

    examples: int = Field(64, gt=0, description="test examples decoded (the first by id)")
    threads: int = Field(0, ge=0, description="torch threads; 0: torch's default")
    repeats: int = Field(1, ge=1, description="timed passes per model; the fastest counts")


class DistillConfig(Section):
    """Distillation and compression of one fine-tuned model (flows/distill.py), scored side by side by evaluate."""

    task: str = Field(description="the finetune task whose examples the students train on and are scored on")
    teacher: str | None = Field(None, description="a fine-tuned model directory; null: that task's fine-tuned model")
    students: list[StudentConfig] = []
    compress: CompressConfig = CompressConfig()
    speed: SpeedConfig = SpeedConfig()

    @model_validator(mode="after")
    def _check_names(self) -> DistillConfig:
        names = [s.name for s in self.students]
        if len(set(names)) != len(names) or "teacher" in names:
            raise ValueError(f"student names {names} must be distinct and not 'teacher'")
        unknown = [m for m in self.compress.models if m != "teacher" and m not in names]
        if unknown:
            raise ValueError(f"compress.models {unknown} name no student; use teacher or one of {names}")
        return self


class PipelineConfig(Section):
    name: str = "llmpipe"
    data: DataConfig
    pretrain: PretrainConfig = PretrainConfig()
    finetune: list[FinetuneTaskConfig] = Field([], description="downstream tasks, each fine-tuned from the pretrained model")
    evaluate: EvaluateConfig = EvaluateConfig()
    distill: DistillConfig | None = Field(None, description="students and compressed models of a fine-tuned one")

    @model_validator(mode="after")
    def _check_families(self) -> PipelineConfig:
        model, tokenizer = self.pretrain.model.family, self.data.tokenizer.family
        if model != tokenizer:
            raise ValueError(
                f"pretrain.model.family is {model!r} but data.tokenizer.family is {tokenizer!r}: "
                "a model trains on its own family's tokenizer; set both to the same family"
            )
        return self


class ConfigError(Exception):
    """A config file that cannot be used; the message lists every problem with its location."""


_FIXES = {
    "extra_forbidden": "remove this key or correct its spelling",
    "missing": "add this key",
    "literal_error": "use one of the allowed values",
}


Problem = tuple[Sequence, str]  # (location: keys and list indices, what is wrong and the fix)


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML file; relative paths become absolute. Then the pre-flight checks
    (`preflight`), so that a config that passes here does not fail on a setting later."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing YAML file (see configs/tiny.yaml)")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with at least a `data` section")
    _resolve_paths(raw, path.parent.resolve())
    problems = _duplicate_keys(root)
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_report(path, root, problems + _explain(exc))) from None
    problems += preflight(config)
    if problems:
        raise ConfigError(_report(path, root, problems))
    return config


def preflight(config: PipelineConfig) -> list[Problem]:
    """What the fields' validators cannot see, checked before any stage runs: what the training code
    measures and the model families' defaults (imported here: they need torch), and the files the config names."""
    return [*_training_problems(config), *_missing_files(config), *_missing_sources(config.data.ingest)]


def _training_problems(config: PipelineConfig) -> list[Problem]:
    from llmcore.finetune.run import TASK_METRICS
    from llmcore.model.config import ARCHITECTURES, FAMILIES
    from llmcore.train.trainer import METRICS

    def bounded(model: ModelConfig) -> bool:  # a position table of max_seq_len entries
        return (model.positions or FAMILIES[model.family]["positions"]) in ("learned", "sinusoidal")

    problems: list[Problem] = []
    pre, pretrained = config.pretrain, config.pretrain.model
    if pre.train.early_stopping.metric not in METRICS:
        problems.append((("pretrain", "train", "early_stopping", "metric"), f"{pre.train.early_stopping.metric!r} is not "
                         f"measured in pretraining; use one of {list(METRICS)}"))
    if bounded(pretrained) and pretrained.max_seq_len and pre.block_size > pretrained.max_seq_len:
        problems.append((("pretrain", "block_size"), f"{pre.block_size} tokens per example exceed the model's "
                         f"{pretrained.max_seq_len} positions (pretrain.model.max_seq_len): lower block_size or raise max_seq_len"))
    tasks = [(("finetune", i), task) for i, task in enumerate(config.finetune)]
    if config.data.augment.backtranslation:
        tasks.append((("data", "augment", "backtranslation", "reverse"), config.data.augment.backtranslation.reverse))
    for loc, task in tasks:
        measured = [*METRICS, *(TASK_METRICS[task.task] if task.validation_fraction else ())]
        if task.train.early_stopping.metric not in measured:
            problems.append(((*loc, "train", "early_stopping", "metric"), f"{task.train.early_stopping.metric!r} is not "
                             f"measured for a {task.task} task; use one of {measured}"))
        if task.init == "scratch":
            model, which, field = task.model, "this task's model", "model"
            context = model.max_seq_len or task.max_source_length + task.max_target_length
        elif task.init == "pretrained":
            model, which, field = pretrained, "the pretrained model", "pretrain.model"
            context = pretrained.max_seq_len or pre.block_size
        else:
            continue  # a checkpoint directory: its config.json is checked when it is loaded
        architecture = ARCHITECTURES[model.family]
        if architecture == "encoder":
            problems.append(((*loc, "init"), f"{which} ({field}.family) is a {model.family} encoder, which cannot generate: "
                             "fine-tune a gpt or t5 model"))
            continue
        decoder = architecture == "decoder"  # source and target share the positions of one sequence
        length = task.max_source_length + task.max_target_length if decoder else max(task.max_source_length, task.max_target_length)
        if bounded(model) and length > context:
            what = "max_source_length + max_target_length" if decoder else "the longer of max_source_length and max_target_length"
            problems.append(((*loc, "max_source_length"), f"examples of up to {length} tokens ({what}) exceed the {context} "
                             f"positions of {which}: lower the lengths, or raise {field}.max_seq_len"))
        if task.freeze.first_layers > model.n_layers:
            problems.append(((*loc, "freeze", "first_layers"), f"{task.freeze.first_layers} layers to freeze but {which} has "
                             f"{model.n_layers} ({field}.n_layers): freeze at most {model.n_layers}"))
    return problems


def _missing_files(config: PipelineConfig) -> list[Problem]:
    """The files and directories the config names, resolved as the runtime resolves them (`_resolve_paths`)."""
    data, augment = config.data, config.data.augment
    named = [(("data", "tokenizer", "path"), data.tokenizer.path)]
    for i, task in enumerate(config.finetune):
        named.append((("finetune", i, "path"), task.path))
        if task.init not in ("pretrained", "scratch"):
            named.append((("finetune", i, "init"), task.init))
    if augment.backtranslation:
        named += [(("data", "augment", "backtranslation", key), getattr(augment.backtranslation, key)) for key in ("pairs", "model")]
    if augment.eda:
        named.append((("data", "augment", "eda", "synonyms"), augment.eda.synonyms))
    return [(loc, f"{value} does not exist (a relative path is resolved against the config file's directory): fix the path")
            for loc, value in named if value is not None and not os.path.exists(value)]


def _missing_sources(ingest: IngestConfig) -> list[Problem]:
    """Ingest sources whose path names no input, as the ingest stage lists them (apart from IngestConfig's own checks)."""
    from llmcore.data.readers import SourceError, list_inputs

    problems: list[Problem] = []
    for i, src in enumerate(ingest.sources):
        try:
            list_inputs(src, i)
        except SourceError as exc:
            problems.append((("data", "ingest", "sources", i, "path"), str(exc)))
    return problems


def _duplicate_keys(node: yaml.Node | None, loc: tuple = (), seen: set[int] | None = None) -> list[Problem]:
    """Keys given twice in one mapping: YAML keeps the last silently. Merge keys (`<<: *anchor`) are overrides, not duplicates."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:  # an alias is the anchored node again
        return []
    seen.add(id(node))
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name != "<<":
                if name in first:
                    problems.append(((*loc, name), f"given twice: here and again at line {key.start_mark.line + 1} (YAML would "
                                     "keep the last silently) -> fix: keep one"))
                first.setdefault(name, key.start_mark.line + 1)
            problems += _duplicate_keys(value, (*loc, name), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, (*loc, i), seen)
    return problems


def _resolve_paths(raw: dict, base: Path) -> None:
    sources = ((raw.get("data") or {}).get("ingest") or {}).get("sources") or []
    for src in sources:
        if isinstance(src, dict) and isinstance(src.get("path"), str) and not Path(src["path"]).is_absolute():
            src["path"] = str(base / src["path"])
    tokenizer = (raw.get("data") or {}).get("tokenizer") or {}
    backtranslation = ((raw.get("data") or {}).get("augment") or {}).get("backtranslation") or {}
    eda = ((raw.get("data") or {}).get("augment") or {}).get("eda") or {}
    tasks = [t for t in raw.get("finetune") or [] if isinstance(t, dict)]
    for section, key in [(tokenizer, "path"), (backtranslation, "pairs"), (backtranslation, "model"), (eda, "synonyms"),
                         *((t, "path") for t in tasks), *((t, "init") for t in tasks if t.get("init") not in ("pretrained", "scratch"))]:
        if isinstance(section, dict) and isinstance(section.get(key), str) and not Path(section[key]).is_absolute():
            section[key] = str(base / section[key])


def _explain(exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors():
        loc = [part for part in err["loc"] if not str(part).startswith("function-after")]
        fix = _FIXES.get(err["type"], "")
        problems.append((loc, err["msg"] + (f" -> fix: {fix}" if fix else "")))
    return problems


def _report(path: Path, root: yaml.Node | None, problems: list[Problem]) -> str:
    lines = [f"{path}: {len(problems)} problem(s):"]
    for loc, message in problems:
        field = ".".join(str(p) for p in loc) or "(top level)"
        lines.append(f"  {path}{_line_of(root, list(loc))} {field}: {message}")
    return "\n".join(lines)


def _line_of(node: yaml.Node | None, loc: list) -> str:
    """':LINE' of the deepest YAML node found along loc, or '' when the path is not in the file."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
            if node is None:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return f":{line}" if line else ""
