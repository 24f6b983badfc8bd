"""The Python steps of scripts/gpu_check.sh; each prints what it found, exits 0 (pass) or 1 (fail).

    python scripts/gpu_check.py env OUTDIR     # versions, precision, device draws, no host sync
                                               # in forward or backward, fp16/bf16
    python scripts/gpu_check.py smoke OUTDIR   # every variant trains a smoke run in fp32 and AMP
    python scripts/gpu_check.py resume OUTDIR  # stop + resume == straight run, bit for bit
                                               # (deterministic mode)
    python scripts/gpu_check.py loader OUTDIR  # step time with data.loader_workers 0 vs 4
    python scripts/gpu_check.py bench_csv CSV STATUS...  # every row of a bench CSV has one of
                                                         # the statuses

Sizes follow the device: CUDA when it is there (unless GPU_CHECK_CPU=1), else a CPU size that
checks the same wiring in minutes.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

CPU_MODE = os.environ.get("GPU_CHECK_CPU") == "1" or not torch.cuda.is_available()
DEVICE = torch.device("cpu" if CPU_MODE else "cuda")
SMALL = {  # settings that fit the smoke runs' short sequences
    "skyformer": ["attn.num_landmarks=16"],
    "nystromformer": ["attn.num_landmarks=16"],
    "performer": ["attn.num_features=16"],
    "linformer": ["attn.proj_dim=16"],
    "bigbird": ["attn.block_size=16"],
    "reformer": ["attn.chunk_size=16"],
    "local": ["attn.block_size=16"],
    "sinkhorn": ["attn.block_size=16"],
    "longformer": ["attn.window=16"],
    "sparse": ["attn.stride=16", "attn.summary=4"],
}


def run_overrides(out: Path, name: str) -> list[str]:
    """Overrides for a smoke-size run on this device writing under ``out/name``."""
    return [
        "trainer=smoke",
        f"trainer.device={DEVICE.type}",
        f"paths.cache_dir={out / 'cache'}",
        f"paths.run_dir={out / name}",
        f"paths.leaderboard={out / 'leaderboard.csv'}",
        "data.gen_workers=1",
    ]


def env(out: Path) -> bool:
    """Versions and precision; every variant draws on the
    device, reads nothing back, and is finite in fp16/bf16."""
    from lra_bench.attention import available
    from lra_bench.runtime import native_bf16, precision_of

    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(DEVICE),
        "cpu_mode": CPU_MODE,
    }
    if DEVICE.type == "cuda":
        info |= {
            "name": torch.cuda.get_device_name(DEVICE),
            "capability": torch.cuda.get_device_capability(DEVICE),
            "bf16_native": native_bf16(DEVICE),
            "bf16_with_emulation": torch.cuda.is_bf16_supported(),
            "flash_sdp": torch.backends.cuda.flash_sdp_enabled(),
        }
    info["amp_precision"] = precision_of(True, DEVICE)[0]
    print(json.dumps(info, default=str))
    ok = True
    for name in available():
        problems = check_variant(name)
        print(f"{name:14s} {'ok' if not problems else '; '.join(problems)}")
        ok &= not problems
    return ok


def check_variant(name: str) -> list[str]:
    """One variant on the device: draws there, no host sync in
    train or eval forward or in backward, finite in fp16/bf16 autocast."""
    from lra_bench.attention import build_attention
    from lra_bench.attention.base import SampledAttention

    torch.manual_seed(0)
    attn = build_attention(
        {"name": name, "dropout": 0.0, **_small_kwargs(name)},
        head_dim=32,
        num_heads=2,
        max_len=1024,
    ).to(DEVICE)
    q, k, v = (torch.randn(2, 2, 1000, 32, device=DEVICE) for _ in range(3))
    mask = torch.ones(2, 1000, dtype=torch.bool, device=DEVICE)
    mask[1, 600:] = False
    problems = []
    if isinstance(attn, SampledAttention) and attn.generator(DEVICE).device.type != DEVICE.type:
        problems.append("draws off the device")
    for mode in (True, False):
        attn.train(mode)
        problems += _no_sync("forward", attn, q, k, v, mask)
    attn.train()
    grads = [x.detach().requires_grad_() for x in (q, k, v)]
    attn(*grads, mask).sum().backward()  # lazily built state outside the check
    problems += _no_sync("backward", lambda: attn(*grads, mask).sum().backward())
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast(DEVICE.type, dtype=dtype):
            out = attn(q.to(dtype), k.to(dtype), v.to(dtype), mask)
        if not torch.isfinite(out).all():
            problems.append(f"not finite under {dtype} autocast")
    return problems


def _small_kwargs(name: str) -> dict[str, object]:
    return {o.split("=")[0].split(".")[1]: int(o.split("=")[1]) for o in SMALL.get(name, [])}


def _no_sync(what: str, fn: Callable[..., object], *args: object) -> list[str]:
    """Run ``fn(*args)`` (``what``: forward, or forward and backward) with CUDA's sync debug
    mode set to error (a host round trip raises); CPU: just run it."""
    if DEVICE.type != "cuda":
        fn(*args)
        return []
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn(*args)
        return []
    except RuntimeError as err:
        return [f"host sync in {what}: {str(err).splitlines()[0][:120]}"]
    finally:
        torch.cuda.set_sync_debug_mode("default")


def smoke(out: Path) -> bool:
    """Every variant trains a smoke run in fp32 and
    in AMP (bf16, or fp16 where bf16 is emulated)."""
    from lra_bench.attention import available
    from lra_bench.compose import compose_config
    from lra_bench.train import run

    ok = True
    for name in available():
        for amp in (False, True):
            start = time.perf_counter()
            try:
                result = run(
                    compose_config(
                        [
                            f"attn={name}",
                            *SMALL.get(name, []),
                            *run_overrides(out, f"smoke/{name}-amp{int(amp)}"),
                            f"trainer.amp={amp}",
                        ]
                    )
                )
                line = (
                    f"{result['precision']:9s} finite loss, test_acc={result['test_acc']:.3f} "
                    f"step_ms={result['step_ms']:.1f}"
                )
            except Exception as err:  # noqa: BLE001 - one line per failing variant, then the next
                ok, line = (
                    False,
                    f"FAILED {type(err).__name__}: "
                    f"{str(err).splitlines()[0][:160] if str(err) else ''}",
                )
            print(
                f"{name:14s} amp={int(amp)} {line} ({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
    return ok


def resume(out: Path) -> bool:
    """Stopped at step 5 and resumed == straight through, bit for bit, in deterministic mode."""
    from lra_bench.compose import compose_config
    from lra_bench.train import run

    ok = True
    for name in ("softmax", "skyformer", "informer", "performer"):
        base = [
            f"attn={name}",
            *SMALL.get(name, []),
            "trainer.steps=8",
            "trainer.ckpt_every=100",
            "trainer.deterministic=true",
        ]
        run(compose_config([*base, *run_overrides(out, f"resume/{name}-straight")]))
        resumed = [*base, *run_overrides(out, f"resume/{name}-resumed")]
        run(compose_config([*resumed, "trainer.stop_at_step=5"]))
        run(compose_config(resumed))
        a, b = (
            torch.load(out / "resume" / f"{name}-{kind}" / "last.pt", weights_only=True)["model"]
            for kind in ("straight", "resumed")
        )
        differ = [
            key for key in a if isinstance(a[key], torch.Tensor) and not torch.equal(a[key], b[key])
        ]
        print(f"{name:14s} {'identical' if not differ else 'DIFFERENT: ' + ', '.join(differ[:4])}")
        ok &= not differ
    return ok


def loader(out: Path) -> bool:
    """Median step time with 0 and 4 loader workers (the
    loader starves the device when 0 is much slower)."""
    from lra_bench.compose import compose_config
    from lra_bench.train import run

    steps, batch = ("12", "16") if CPU_MODE else ("150", "32")
    times = {}
    for workers in (0, 4):
        overrides = [
            *run_overrides(out, f"loader/w{workers}"), "attn=softmax", f"trainer.steps={steps}",
            f"trainer.batch_size={batch}", f"trainer.eval_every={steps}", "data.train_size=1000",
            "data.limit_train=1000", f"data.loader_workers={workers}",
        ]  # fmt: skip
        times[workers] = run(compose_config(overrides))["step_ms"]
    ratio = times[0] / times[4]
    verdict = (
        "the loader starves the device with 0 workers"
        if ratio > 1.2
        else "no starvation at 0 workers"
    )
    print(
        f"step_ms: workers=0 {times[0]:.2f}, workers=4 {times[4]:.2f}; ratio {ratio:.2f}: {verdict}"
    )
    return all(t > 0 for t in times.values())


def bench_csv(path: Path, *statuses: str) -> bool:
    """Every row of the bench CSV ``path`` has one of
    ``statuses`` (and there is at least one row)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    bad = [
        f"{r['label']} n={r['n']}: {r['status']} {r.get('error', '')}".strip()
        for r in rows
        if r["status"] not in statuses
    ]
    for row in rows:
        timing = row.get("fwdbwd_ms") or row.get("step_ms") or ""
        print(
            f"{row['label']:24s} n={row['n']:6s} {row['status']:8s} {timing} "
            f"{row.get('peak_mem_mb', '')} MB"
        )
    for line in bad:
        print(f"unexpected: {line}")
    return bool(rows) and not bad


def main(argv: list[str]) -> int:
    steps = {"env": env, "smoke": smoke, "resume": resume, "loader": loader}
    if len(argv) >= 2 and argv[0] == "bench_csv":
        return 0 if bench_csv(Path(argv[1]), *argv[2:]) else 1
    if len(argv) != 2 or argv[0] not in steps:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if CPU_MODE:
        torch.set_num_threads(int(os.environ.get("GPU_CHECK_THREADS", "1")))
    return 0 if steps[argv[0]](out) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
