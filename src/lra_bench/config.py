"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore.

Hydra checks types while composing (``seed=abc`` fails there, naming the key);
``validate`` then checks ranges and cross-field rules before any work starts and
raises ``ConfigError`` whose message is one line naming the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lra_bench.errors import ConfigError
from lra_bench.run_names import register_resolver

__all__ = ["ConfigError", "Config", "validate", "config_hash", "register_configs"]


@dataclass
class TaskConfig:
    """One LRA task and its default (Skyformer-paper) protocol."""

    name: str = MISSING
    num_classes: int = MISSING
    max_len: int = MISSING
    vocab_size: int = MISSING
    dual: bool = False  # retrieval: two documents through one shared encoder
    batch_size: int = 32
    lr: float = 1e-4
    warmup_steps: int = 1000
    eval_every: int = 500
    steps: int = 50_000


@dataclass
class DataConfig:
    """Where a task's data comes from and how batches are formed."""

    source: str = "auto"  # auto | release | generate | hub | local
    root: str | None = None  # a local folder holding the task's files (overrides paths.data_dir)
    train_size: int | None = None  # generated tasks: number of examples (None = the task's default)
    val_size: int | None = None
    test_size: int | None = None
    gen_seed: int = 0  # seed of the synthetic generators (independent of the training seed)
    gen_workers: int = 2  # processes used to generate synthetic data
    size: int | None = None  # generated tasks: total examples (split by the task's own rule)
    min_length: int | None = None  # listops generator: keep min_length < length < max_length
    max_length: int | None = None  # (None = LRA's 500 and 2000)
    difficulty: str | None = None  # pathfinder: easy | intermediate | hard
    max_bytes: int = 4000  # text/retrieval: bytes kept per document (LRA: 4000, then padded to max_len)
    split_seed: int = 0  # seed of held-out splits cut from a source (independent of the training seed)
    dev_split: str = "default"  # text: "default" uses test as dev (LRA); "heldout" splits train (image: always the last 10% of train)
    heldout_fraction: float = 0.1
    loader_workers: int = 0
    pad_to: str = "max_len"  # max_len (protocol: fixed shapes) | batch (pad to the longest in the batch)
    mask_zero: bool = False  # parity with published code: treat token id 0 as padding
    limit_train: int | None = None  # use only the first N training examples (smoke checks)
    limit_eval: int | None = None  # use only the first N dev/test examples (smoke checks)
    fit_sizes: bool = False  # a source smaller than train/val/test_size: take what is there (>= 2 per split)


@dataclass
class ModelConfig:
    """The shared encoder of DESIGN §3."""

    dim: int = 64
    ffn_dim: int = 128
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.1
    pooling: str = "mean"  # mean (over valid tokens) | mean_padded (over the padded length, as peer code)
    classifier_dim: int = 128
    attn_fp32: bool = True  # run the attention itself in fp32 under mixed precision


@dataclass
class TrainerConfig:
    """The shared training loop (DESIGN §6)."""

    steps: int = "${task.steps}"  # type: ignore[assignment]
    batch_size: int = "${task.batch_size}"  # type: ignore[assignment]
    lr: float = "${task.lr}"  # type: ignore[assignment]
    warmup_steps: int = "${task.warmup_steps}"  # type: ignore[assignment]
    eval_every: int = "${task.eval_every}"  # type: ignore[assignment]
    eval_batch_size: int | None = None  # None = batch_size
    grad_accum: int = 1
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-6
    clip_value: float | None = 1.0
    amp: bool = False  # mixed precision (bf16 on CPU, fp16 with a scaler on CUDA)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    ckpt_every: int = 500
    log_every: int = 10
    progress: bool = True
    stop_at_step: int | None = None  # stop as if preempted after this step (time-boxed jobs)
    deterministic: bool = False
    threads: int | None = None  # torch intra-op threads (None = torch's default)


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "lra-bench"
    entity: str | None = None
    mode: str = "online"  # online | offline | disabled (WANDB_MODE also honoured)
    tags: list[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    data_dir: str = "data"
    cache_dir: str = MISSING
    runs_dir: str = "runs"
    run_dir: str | None = None  # this run's folder (None = Hydra's output folder)
    leaderboard: str = "results/leaderboard.csv"


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    attn: Any = MISSING  # validated against the variant's own dataclass (attention registry)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    experiment_name: str | None = None
    parity: str = "none"  # whose code the run reproduces: none | skyformer_code | lra_code (set by the parity group)


def register_configs() -> None:
    """Register the schemas so that config.yaml can list ``base_config`` first."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    register_resolver()


def _fail(key: str, value: Any, rule: str) -> None:
    raise ConfigError(f"invalid setting {key}={value!r}: {rule}")


def _check_positive(section: DictConfig, prefix: str, keys: list[str], *, strict: bool = True) -> None:
    for key in keys:
        value = section[key]
        if value is None:
            continue
        if (strict and value <= 0) or (not strict and value < 0):
            _fail(f"{prefix}.{key}", value, "must be > 0" if strict else "must be >= 0")


def validate(cfg: DictConfig) -> None:
    """Check ranges and cross-field rules; raise ConfigError (one line) on the first problem."""
    from lra_bench.attention import validate_attention_config

    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"invalid setting {key}: {str(err).splitlines()[0]}") from None
    _check_positive(cfg.task, "task", ["num_classes", "max_len", "vocab_size", "steps"])
    _check_positive(
        cfg.trainer,
        "trainer",
        ["steps", "batch_size", "lr", "eval_every", "eval_batch_size", "grad_accum", "ckpt_every", "log_every"],
    )
    _check_positive(cfg.trainer, "trainer", ["warmup_steps", "weight_decay", "clip_value"], strict=False)
    if cfg.trainer.warmup_steps == 1:
        _fail("trainer.warmup_steps", 1, "must be 0 or at least 2 (OneCycleLR needs a warm-up phase of two steps)")
    if cfg.trainer.warmup_steps >= cfg.trainer.steps:
        _fail("trainer.warmup_steps", cfg.trainer.warmup_steps, f"must be < trainer.steps ({cfg.trainer.steps})")
    if cfg.trainer.batch_size % cfg.trainer.grad_accum:
        _fail("trainer.batch_size", cfg.trainer.batch_size, f"must be divisible by trainer.grad_accum ({cfg.trainer.grad_accum})")
    _check_positive(cfg.model, "model", ["dim", "ffn_dim", "num_layers", "num_heads", "classifier_dim"])
    if cfg.model.dim % cfg.model.num_heads:
        _fail("model.dim", cfg.model.dim, f"must be divisible by model.num_heads ({cfg.model.num_heads})")
    if not 0.0 <= cfg.model.dropout < 1.0:
        _fail("model.dropout", cfg.model.dropout, "must be in [0, 1)")
    if cfg.model.pooling not in ("mean", "mean_padded"):
        _fail("model.pooling", cfg.model.pooling, "choose mean or mean_padded")
    if cfg.data.pad_to not in ("max_len", "batch"):
        _fail("data.pad_to", cfg.data.pad_to, "choose max_len or batch")
    _check_positive(cfg.data, "data", ["train_size", "val_size", "test_size", "size", "gen_workers", "limit_train", "limit_eval", "max_bytes"])
    _check_positive(cfg.data, "data", ["gen_seed", "split_seed", "min_length", "loader_workers"], strict=False)
    if cfg.data.min_length is not None and cfg.data.max_length is not None and cfg.data.max_length <= cfg.data.min_length + 1:
        _fail("data.max_length", cfg.data.max_length, f"must exceed data.min_length + 1 ({cfg.data.min_length + 1})")
    if cfg.data.difficulty not in (None, "easy", "intermediate", "hard"):
        _fail("data.difficulty", cfg.data.difficulty, "choose easy, intermediate or hard")
    if cfg.data.dev_split not in ("default", "heldout"):
        _fail("data.dev_split", cfg.data.dev_split, "choose default (dev = test, as LRA) or heldout")
    if not 0.0 < cfg.data.heldout_fraction < 1.0:
        _fail("data.heldout_fraction", cfg.data.heldout_fraction, "must be in (0, 1)")
    if cfg.logger.name not in ("none", "wandb"):
        _fail("logger.name", cfg.logger.name, "choose none or wandb")
    if cfg.seed < 0:
        _fail("seed", cfg.seed, "must be >= 0")
    validate_attention_config(cfg.attn, max_len=cfg.task.max_len, head_dim=cfg.model.dim // cfg.model.num_heads)


def config_hash(cfg: DictConfig) -> str:
    """A short stable hash of everything that shapes a run's result (paths and logging excluded)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    shaping = {k: container[k] for k in ("task", "attn", "model", "trainer", "data", "seed")}
    for volatile in ("progress", "log_every", "stop_at_step", "ckpt_every", "device", "threads"):
        shaping["trainer"].pop(volatile, None)
    for volatile in ("loader_workers", "gen_workers", "root", "source"):
        shaping["data"].pop(volatile, None)
    blob = json.dumps(shaping, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
