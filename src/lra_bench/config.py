"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore, and their validation.

Hydra checks types and keys while composing (``seed=abc`` or ``attn.num_landmarks=abc``
fails there, naming the key): the run's sections are the dataclasses below and each
attention's settings are its registered dataclass (an option of the ``attn`` group).
``validate`` then checks every range and cross-field rule, including each attention's
own ``check`` and each task's data settings, and raises ``ConfigError`` whose message is
one line naming the key. It is the only place such rules live; the data modules and the
model take validated settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lra_bench import training_rules
from lra_bench.attention import checked_config, register_attention_configs
from lra_bench.data.tasks import IMAGE_SIDES, LISTOPS_LENGTHS, TASK_SOURCES
from lra_bench.errors import ConfigError
from lra_bench.run_names import RESULT_NEUTRAL, register_resolver

__all__ = ["ConfigError", "Config", "validate", "config_hash", "register_configs"]


@dataclass
class TaskConfig:
    """One LRA task: what defines it (classes, length, vocabulary), not how it is trained."""

    name: str = MISSING
    num_classes: int = MISSING
    max_len: int = MISSING
    vocab_size: int = MISSING
    dual: bool = False  # retrieval: two documents through one shared encoder


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
    seed_rule: str = "original"  # pathfinder generator: original | unrestricted (docs/data.md)
    max_bytes: int = (
        4000  # text/retrieval: bytes kept per document (LRA: 4000, then padded to max_len)
    )
    split_seed: int = (
        0  # seed of held-out splits cut from a source (independent of the training seed)
    )
    # text: "default" uses test as dev (LRA); "heldout" splits train (image: always the last
    # 10% of train)
    dev_split: str = "default"
    heldout_fraction: float = 0.1
    loader_workers: int | None = None  # loader processes (None = 4 when training on CUDA, 0 on CPU)
    pad_to: str = (
        "max_len"  # max_len (protocol: fixed shapes) | batch (pad to the longest in the batch)
    )
    bucket: bool = False  # length bucketing: batches of similar lengths, each padded to its longest
    bucket_window: int = 64  # bucketing: batches per window sorted by length (then shuffled)
    mask_zero: bool = False  # parity with published code: treat token id 0 as padding
    limit_train: int | None = None  # use only the first N training examples (smoke checks)
    limit_eval: int | None = None  # use only the first N dev/test examples (smoke checks)
    test_drop_last: bool = (
        False  # drop the test set's last partial batch of trainer.batch_size (peer code)
    )
    fit_sizes: bool = (
        False  # a source smaller than train/val/test_size: take what is there (>= 2 per split)
    )


@dataclass
class ModelConfig:
    """The shared encoder every attention runs in (docs/protocol.md)."""

    dim: int = 64
    ffn_dim: int = 128
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.1
    pooling: str = (
        "mean"  # mean (over valid tokens) | mean_padded (over the padded length, as peer code)
    )
    # | cls (a learned token prepended, its output classifies) | first_token (the first
    # token's output)
    classifier_dim: int = 128
    attn_fp32: bool = True  # run the attention itself in fp32 under mixed precision
    qkv_dim: int | None = None  # width of queries/keys/values over all heads (None = dim)
    positions: str = "learned"  # learned (trained table) | sinusoidal (fixed sin/cos table)
    dual_head: str = (
        "nli"  # retrieval head: nli ([u, v, u*v, u-v] -> MLP) | lra ([u, v] -> 3-layer MLP)
    )
    attn_bias: bool = True  # biases on the query/key/value and output projections
    # default (N(0, 0.02) embeddings, torch layers) | lra (the LRA code's flax initialisers)
    init: str = "default"
    norm_eps: float = 1e-5  # LayerNorm epsilon


@dataclass
class TrainerConfig:
    """The shared training loop; the protocol fills in steps, batch, rate and schedule
    (docs/protocol.md)."""

    steps: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    warmup_steps: int = MISSING
    eval_every: int = MISSING
    eval_batch_size: int | None = None  # None = batch_size
    grad_accum: int = 1
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-6
    clip_value: float | None = 1.0
    schedule: str = "one_cycle"  # one_cycle | warmup_rsqrt | warmup_cosine (see lra_bench.optim)
    cycle_steps: int | None = None  # warmup_cosine: steps per cosine cycle (None = steps)
    amp: bool = False  # mixed precision (bf16 on CPU, fp16 with a scaler on CUDA)
    amp_dtype: str = (
        "auto"  # with amp: auto (bf16 where native, else fp16) | fp16 (CUDA; fp32 elsewhere) | bf16
    )
    best_after: float = (
        0.0  # best.pt only from evaluations after this fraction of steps (lra_bench.training_rules)
    )
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dist_timeout_s: float = (
        600.0  # torchrun: how long a collective waits for a peer (torch: 30 min)
    )
    ckpt_every: int = 500
    log_every: int = 10
    progress: bool = True
    stop_at_step: int | None = None  # stop as if preempted after this step (time-boxed jobs)
    deterministic: bool = False
    threads: int | None = None  # torch intra-op threads (None = torch's default)
    compile: bool = False  # train the model through torch.compile (evaluation runs it as it is)
    compile_backend: str = (
        "inductor"  # torch.compile backend (aot_eager: no code generation, for checks)
    )


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
class ProtocolConfig:
    """Which published protocol set the trainer and model values (conf/protocol/<name>.yaml)."""

    name: str = "skyformer_paper"  # skyformer_paper | lra_paper


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    attn: Any = MISSING  # the chosen variant's dataclass: an option of the ``attn`` group
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    experiment_name: str | None = None
    # whose code the run reproduces: none | skyformer_code | lra_code (set by the parity
    # group)
    parity: str = "none"


def register_configs() -> None:
    """Register the schemas: ``base_config`` (listed first in config.yaml) and every attention as an
    ``attn`` option."""
    ConfigStore.instance().store(name="base_config", node=Config)
    register_attention_configs()
    register_resolver()


def _fail(key: str, value: Any, rule: str) -> NoReturn:
    raise ConfigError(f"invalid setting {key}={value!r}: {rule}")


def _check_positive(
    section: DictConfig, prefix: str, keys: list[str], *, strict: bool = True
) -> None:
    for key in keys:
        value = section[key]
        if value is None:
            continue
        if not math.isfinite(value):
            _fail(f"{prefix}.{key}", value, "must be a finite number")
        if (strict and value <= 0) or (not strict and value < 0):
            _fail(f"{prefix}.{key}", value, "must be > 0" if strict else "must be >= 0")


def validate(cfg: DictConfig, world_size: int = 1) -> None:
    """Check every range and cross-field rule; raise ConfigError (one line) on the first problem.

    ``world_size``: the number of ranks the run is split over (the batch is divided among them).
    """
    _check_resolvable(cfg)
    _check_task(cfg)
    _check_trainer(cfg, world_size)
    _check_model(cfg)
    _check_model_fits(cfg)
    _check_data(cfg)
    _check_task_data(cfg)
    if cfg.logger.name not in ("none", "wandb"):
        _fail("logger.name", cfg.logger.name, "choose none or wandb")
    if cfg.seed < 0:
        _fail("seed", cfg.seed, "must be >= 0")
    _check_attention(cfg)


def _check_resolvable(cfg: DictConfig) -> None:
    """Every value present and every interpolation resolvable (Hydra's own node left out)."""
    run_keys = [key for key in cfg if key != "hydra"]
    try:
        OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, run_keys), resolve=True, throw_on_missing=True
        )
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"invalid setting {key}: {str(err).splitlines()[0]}") from None


def _check_task(cfg: DictConfig) -> None:
    _check_positive(cfg.task, "task", ["num_classes", "max_len", "vocab_size"])
    side = IMAGE_SIDES.get(cfg.task.name)
    if side is not None and cfg.task.max_len < side * side:
        _fail("task.max_len", cfg.task.max_len, f"{side}x{side} images need {side * side} tokens")


def _check_trainer(cfg: DictConfig, world_size: int) -> None:
    trainer = cfg.trainer
    _check_positive(
        trainer,
        "trainer",
        [
            "steps",
            "batch_size",
            "lr",
            "eval_every",
            "eval_batch_size",
            "grad_accum",
            "ckpt_every",
            "log_every",
            "eps",
            "dist_timeout_s",
        ],
    )
    _check_positive(
        trainer, "trainer", ["warmup_steps", "weight_decay", "clip_value"], strict=False
    )
    _check_betas(trainer.betas)
    check_device(trainer.device)
    _check_schedule(trainer)
    training_rules.check(cfg, _fail)
    if trainer.batch_size % (trainer.grad_accum * world_size):
        rule = f"trainer.grad_accum ({trainer.grad_accum})"
        if world_size > 1:
            rule = f"ranks x trainer.grad_accum ({world_size} x {trainer.grad_accum})"
        _fail("trainer.batch_size", trainer.batch_size, f"must be divisible by {rule}")


def _check_betas(betas: Any) -> None:
    """Adam's two decay rates, each in [0, 1)."""
    values = list(betas) if OmegaConf.is_list(betas) else None
    if values is None or len(values) != 2:
        _fail("trainer.betas", betas, "give two values in [0, 1), e.g. [0.9,0.999]")
    for value in values:
        if not (math.isfinite(value) and 0.0 <= value < 1.0):
            _fail("trainer.betas", values, "each value must be in [0, 1), e.g. [0.9,0.999]")


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(name: str) -> None:
    """A device kind the run can use; a CUDA index this machine has (when it has CUDA)."""
    if not DEVICE_PATTERN.fullmatch(name):
        _fail("trainer.device", name, "choose auto, cpu, cuda or cuda:N")
    if name.startswith("cuda:"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else None
        if count is not None and int(name[5:]) >= count:
            _fail("trainer.device", name, f"this machine has {count} CUDA device(s): cuda:0..")


def _check_schedule(trainer: DictConfig) -> None:
    from lra_bench.optim import SCHEDULES

    if trainer.schedule not in SCHEDULES:
        _fail("trainer.schedule", trainer.schedule, f"choose {', '.join(SCHEDULES)}")
    _check_positive(trainer, "trainer", ["cycle_steps"])
    if trainer.schedule != "one_cycle":
        if trainer.warmup_steps < 1:  # the LRA factors divide by the warm-up length
            _fail(
                "trainer.warmup_steps",
                trainer.warmup_steps,
                f"must be >= 1 for trainer.schedule={trainer.schedule}",
            )
        return
    if trainer.warmup_steps == 1:
        _fail(
            "trainer.warmup_steps",
            1,
            "must be 0 or at least 2 (OneCycleLR needs a warm-up phase of two steps)",
        )
    if trainer.warmup_steps >= trainer.steps:
        _fail(
            "trainer.warmup_steps",
            trainer.warmup_steps,
            f"must be < trainer.steps ({trainer.steps})",
        )


MODEL_CHOICES = {
    "pooling": ("mean", "mean_padded", "cls", "first_token"),
    "positions": ("learned", "sinusoidal"),
    "dual_head": ("nli", "lra"),
    "init": ("default", "lra"),
}


def _check_model(cfg: DictConfig) -> None:
    model = cfg.model
    _check_positive(
        model,
        "model",
        ["dim", "ffn_dim", "num_layers", "num_heads", "classifier_dim", "qkv_dim", "norm_eps"],
    )
    qkv_dim = model.qkv_dim or model.dim
    if qkv_dim % model.num_heads:
        key = "model.qkv_dim" if model.qkv_dim else "model.dim"
        _fail(key, qkv_dim, f"must be divisible by model.num_heads ({model.num_heads})")
    if not 0.0 <= model.dropout < 1.0:
        _fail("model.dropout", model.dropout, "must be in [0, 1)")
    for key, allowed in MODEL_CHOICES.items():
        if model[key] not in allowed:
            _fail(f"model.{key}", model[key], f"choose {', '.join(allowed)}")
    if model.dual_head == "lra" and model.classifier_dim < 2:
        _fail(
            "model.classifier_dim",
            model.classifier_dim,
            "must be >= 2 with model.dual_head=lra (its second layer is half as wide)",
        )


def _check_model_fits(cfg: DictConfig) -> None:
    """The model's weights and optimiser state fit the device's memory (checked before building
    it)."""
    from lra_bench.model_size import too_large

    why = too_large(cfg.model, cfg.task, cfg.trainer.device)
    if why is not None:
        model = cfg.model
        raise ConfigError(
            f"invalid setting model.dim={model.dim}, model.ffn_dim={model.ffn_dim}, "
            f"model.num_layers={model.num_layers}: {why}"
        )


def _check_data(cfg: DictConfig) -> None:
    data = cfg.data
    if data.pad_to not in ("max_len", "batch"):
        _fail("data.pad_to", data.pad_to, "choose max_len or batch")
    _check_positive(
        data,
        "data",
        [
            "train_size",
            "val_size",
            "test_size",
            "size",
            "gen_workers",
            "limit_train",
            "limit_eval",
            "max_bytes",
            "bucket_window",
        ],
    )
    _check_positive(
        data, "data", ["gen_seed", "split_seed", "min_length", "loader_workers"], strict=False
    )
    if data.difficulty not in (None, "easy", "intermediate", "hard"):
        _fail("data.difficulty", data.difficulty, "choose easy, intermediate or hard")
    if data.get("seed_rule", "original") not in ("original", "unrestricted"):
        _fail("data.seed_rule", data.seed_rule, "choose original or unrestricted")
    if data.dev_split not in ("default", "heldout"):
        _fail("data.dev_split", data.dev_split, "choose default (dev = test, as LRA) or heldout")
    if not 0.0 < data.heldout_fraction < 1.0:
        _fail("data.heldout_fraction", data.heldout_fraction, "must be in (0, 1)")


def _check_task_data(cfg: DictConfig) -> None:
    """The data settings that depend on the task: its sources, the generators' sizes and lengths."""
    task, data = cfg.task.name, cfg.data
    sources = TASK_SOURCES.get(task)
    if sources is not None and data.source not in sources:
        _fail(
            "data.source",
            data.source,
            f"task {task} reads {', '.join(sources[:-1])} or {sources[-1]}",
        )
    lo, hi = data.min_length, data.max_length
    if task == "listops":  # unset lengths are the generator's defaults
        lo, hi = (
            (LISTOPS_LENGTHS[0] if lo is None else lo),
            (LISTOPS_LENGTHS[1] if hi is None else hi),
        )
        if data.size is not None and data.size < 3:
            _fail("data.size", data.size, "too small to split into train/val/test (at least 3)")
    if lo is not None and hi is not None and hi <= lo + 1:
        _fail("data.max_length", hi, f"must exceed data.min_length + 1 ({lo + 1})")
    if task in IMAGE_SIDES:
        sizes = {key: data[key] for key in ("train_size", "val_size", "test_size")}
        unset = [f"data.{key}" for key, value in sizes.items() if value is None]
        if 0 < len(unset) < len(sizes):
            _fail(
                unset[0], None, "set all of data.train_size, data.val_size, data.test_size, or none"
            )


def _check_attention(cfg: DictConfig) -> None:
    """The attention's own rules (its dataclass's ``check``), against the task's length and the head
    size."""
    try:
        head_dim = (cfg.model.qkv_dim or cfg.model.dim) // cfg.model.num_heads
        checked_config(cfg.attn, max_len=cfg.task.max_len, head_dim=head_dim)
    except ValueError as err:
        raise ConfigError(f"invalid setting attn.{err}") from None


def config_hash(cfg: DictConfig) -> str:
    """A short stable hash of everything that shapes a run's result (paths and logging excluded)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    shaping = {k: container[k] for k in ("task", "attn", "model", "trainer", "data", "seed")}
    for key in RESULT_NEUTRAL:  # how the run is carried out, not what it computes
        section, name = key.split(".")
        shaping[section].pop(name, None)
    for (section, key), default in training_rules.UNHASHED_DEFAULTS.items():
        if shaping[section].get(key) == default:  # off: the hash of a run from before the setting
            shaping[section].pop(key)
    if shaping["task"].get("name") not in IMAGE_SIDES:  # only Pathfinder's generator reads it
        shaping["data"].pop("seed_rule", None)
    blob = json.dumps(shaping, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
