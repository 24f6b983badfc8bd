"""Attentions from outside the package: installed plugins (entry points), ``attn=custom``, a user's
config folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lra_bench.attention import build_attention, make_config
from lra_bench.compose import compose_config
from lra_bench.config import validate
from lra_bench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "attention_plugin"

FAVOR = """
from dataclasses import dataclass
from lra_bench.attention import register_attention
from lra_bench.attention.performer import PerformerAttention, PerformerConfig

@dataclass
class FavorConfig(PerformerConfig):
    name: str = "favor"

@register_attention("favor", FavorConfig)
class FavorAttention(PerformerAttention):
    approx_knob = ("softmax", "num_features")
"""

TWIN = """
from dataclasses import dataclass
from lra_bench.attention import AttentionConfig
from lra_bench.attention.softmax import SoftmaxAttention

@dataclass
class Config(AttentionConfig):
    name: str = "{name}"

class Twin(SoftmaxAttention):
    Config = Config
"""


def fake_install(site: Path, dist: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    """What pip leaves for a package: its modules and a dist-info folder with its entry points."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[lra_bench.attention]\n{lines}")
    for module, text in modules.items():
        (site / f"{module}.py").write_text(text)


def cli(
    args: list[str], cwd: Path, site: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python <args>`` in ``cwd`` with ``site`` (plugins) ahead of this checkout's sources."""
    paths = [str(site)] if site else []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [*paths, str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# ---------------------------------------------------------------- entry points


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A class plugin, a module plugin and a broken one, as three installed packages."""
    site = tmp_path / "site"
    fake_install(
        site, "good-attn", {"twin": "twin_mod:Twin"}, {"twin_mod": TWIN.format(name="twin")}
    )
    fake_install(site, "favor-attn", {"favor": "favor_mod"}, {"favor_mod": FAVOR})
    fake_install(site, "broken-attn", {"broken": "missing_module_xyz:Broken"}, {})
    return site


@pytest.mark.slow
def test_plugins_are_listed_and_a_broken_one_costs_one_line(site, tmp_path):
    done = cli(["-m", "lra_bench", "--help"], tmp_path, site)
    assert done.returncode == 0, done.stderr
    listed = next(ln for ln in done.stdout.splitlines() if ln.startswith("attn: "))
    assert {"twin", "favor", "softmax", "skyformer", "custom"} <= set(
        listed[6:].split(", ")
    ) and "broken" not in listed
    [warning] = lines(done.stderr)
    assert warning.startswith(
        "warning: attention plugin broken-attn (entry point broken = missing_module_xyz:Broken) "
        "not loaded"
    )
    assert "ModuleNotFoundError" in warning


@pytest.mark.slow
def test_a_plugin_is_selected_overridden_and_validated_like_a_builtin(site, tmp_path):
    done = cli(
        ["-m", "lra_bench", "attn=favor", "attn.num_features=0", "trainer=smoke"], tmp_path, site
    )
    assert (
        done.returncode == 2
        and lines(done.stderr)[-1]
        == "error: invalid setting attn.num_features: must be >= 1, got 0"
    )
    done = cli(
        ["-m", "lra_bench", "attn=favor", "attn.num_features=8", "--cfg", "job"], tmp_path, site
    )
    assert (
        done.returncode == 0 and "num_features: 8" in done.stdout and "name: favor" in done.stdout
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # the bench and approx commands in new processes, end to end
def test_bench_and_approx_pick_plugins_up(site, tmp_path):
    done = cli(
        [
            "-m",
            "lra_bench.bench",
            "attn=softmax,twin,favor:num_features=16",
            "n=64",
            "batch=1",
            "heads=1",
            "head_dim=8",
            "repeats=1",
            "warmup=0",
            "isolate=none",
            "plot=false",
            "progress=false",
            f"out_dir={tmp_path / 'bench'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        tmp_path,
        site,
    )
    assert done.returncode == 0, done.stderr
    assert {"twin", "favor-num_features=16"} <= {
        ln.split("|")[1].strip() for ln in done.stdout.splitlines() if ln.startswith("|")
    }
    done = cli(
        [
            "-m",
            "lra_bench.approx",
            "--attn",
            "favor",
            "--features",
            "8,16",
            "--n",
            "32",
            "--dim",
            "8",
            "--no-plot",
            "--out-dir",
            str(tmp_path / "approx"),
        ],
        tmp_path,
        site,
    )
    assert done.returncode == 0, done.stderr
    assert "favor" in (tmp_path / "approx" / "approx.csv").read_text()


@pytest.mark.parametrize(
    "installs, command, clash",
    [
        (
            [("alpha-attn", "twin"), ("beta-attn", "twin")],
            ["-m", "lra_bench", "--help"],
            ("alpha-attn (entry point twin", "beta-attn (entry point twin"),
        ),
        (
            [("gamma-attn", "softmax")],
            ["-m", "lra_bench.bench", "attn=softmax", "n=32"],
            ("by both lra_bench and gamma-attn (entry point softmax",),
        ),
    ],
)
@pytest.mark.slow
def test_two_packages_registering_one_name_is_one_error_naming_both(
    installs, command, clash, tmp_path
):
    site = tmp_path / "site"
    for dist, name in installs:
        module = f"{dist.replace('-', '_')}_mod"
        fake_install(site, dist, {name: f"{module}:Twin"}, {module: TWIN.format(name=name)})
    done = cli(command, tmp_path, site)
    [error] = lines(done.stderr)
    assert done.returncode == 2 and error.startswith(
        f"error: attention {installs[0][1]!r} is registered by both"
    )
    assert all(part in error for part in clash), error


# ----------------------------------------------------------- attn=custom and a user's config folder


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The example's cosine attention as a plain module on PYTHONPATH (not installed)."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    shutil.copy(EXAMPLE / "cosine_attention.py", folder / "user_cosine.py")
    monkeypatch.syspath_prepend(str(folder))
    return "user_cosine"


@pytest.mark.parametrize("sep", [":", "."])
def test_custom_target_builds_with_its_own_settings(user_module, sep):
    cfg = compose_config(
        [
            "attn=custom",
            f"attn.target={user_module}{sep}CosineAttention",
            "+attn.settings.temperature=3",
            "attn.dropout=0.2",
        ]
    )
    validate(cfg)
    attn = build_attention(make_config(cfg.attn), head_dim=8, num_heads=2, max_len=cfg.task.max_len)
    assert (
        type(attn).__name__ == "CosineAttention"
        and attn.cfg.temperature == 3.0
        and attn.cfg.dropout == 0.2
    )
    assert attn.cfg.name == "cosine"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["attn.target=no_such_module:Thing"],
            "invalid setting attn.target: cannot import 'no_such_module:Thing' "
            "(ModuleNotFoundError",
        ),
        (
            ["attn.target=os:path"],
            "invalid setting attn.target: 'os:path' is not a subclass of "
            "lra_bench.attention.Attention",
        ),
        ([], "invalid setting attn.target: give the attention class as module:Class"),
        (
            ["attn.target=user_cosine:CosineAttention", "+attn.settings.temperature=0"],
            "invalid setting attn.settings.temperature: must be > 0",
        ),
        (
            ["attn.target=user_cosine:CosineAttention", "+attn.settings.window=3"],
            "invalid setting attn.settings.window: not a setting of attention",
        ),
        (
            ["attn.target=user_cosine:CosineAttention", "+attn.settings.temperature=hot"],
            "invalid setting attn.settings.temperature: Value 'hot'",
        ),
    ],
)
def test_a_bad_custom_target_or_setting_is_one_line(user_module, overrides, message):
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(["attn=custom", *overrides]))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_custom_target_trains_and_records_a_row(user_module, smoke_overrides, tmp_path):
    from lra_bench.train import run

    cfg = compose_config(
        [
            "attn=custom",
            f"attn.target={user_module}:CosineAttention",
            "+attn.settings.temperature=4",
            *smoke_overrides,
        ]
    )
    result = run(cfg)
    assert result["status"] == "complete" and result["attn"] == "custom"
    assert ",custom," in (tmp_path / "leaderboard.csv").read_text()
    assert "target: user_cosine:CosineAttention" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.slow
def test_custom_on_the_command_line_fails_in_one_line_before_any_folder(tmp_path):
    done = cli(
        ["-m", "lra_bench", "attn=custom", "attn.target=no_such_module:Thing", "trainer=smoke"],
        tmp_path,
    )
    [error] = lines(done.stderr)
    assert done.returncode == 2 and error.startswith(
        "error: invalid setting attn.target: cannot import 'no_such_module:Thing'"
    )
    assert list(tmp_path.iterdir()) == []


def user_config_dir(root: Path) -> Path:
    """A user's presets: one over a built-in, one over a custom target."""
    (root / "attn").mkdir(parents=True)
    (root / "attn" / "wide_skyformer.yaml").write_text(
        "defaults:\n  - skyformer\n\nnum_landmarks: 256\n"
    )
    (root / "attn" / "sharp_cosine.yaml").write_text(
        "defaults:\n  - custom\n\ntarget: user_cosine:CosineAttention\nsettings:\n  temperature: "
        "20.0\n"
    )
    return root


def test_a_users_config_folder_composes_with_ours(user_module, tmp_path):
    search = f"hydra.searchpath=[file://{user_config_dir(tmp_path / 'my_conf')}]"
    wide = compose_config([search, "attn=wide_skyformer", "attn.gamma=0.5"])
    assert (wide.attn.name, wide.attn.num_landmarks, wide.attn.gamma, wide.task.name) == (
        "skyformer",
        256,
        0.5,
        "listops",
    )
    sharp = compose_config([search, "attn=sharp_cosine", "attn.settings.temperature=7"])
    validate(sharp)
    assert make_config(sharp.attn).target_config().temperature == 7.0  # type: ignore[attr-defined]


def test_config_dir_on_the_command_line(tmp_path):
    conf = user_config_dir(tmp_path / "my_conf")
    done = cli(
        ["-m", "lra_bench", "--config-dir", str(conf), "attn=wide_skyformer", "--cfg", "job"],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "num_landmarks: 256" in done.stdout and "name: skyformer" in done.stdout


# ---------------------------------------------------------------- the example plugin, installed


@pytest.mark.slow
def test_example_plugin_installs_trains_and_reaches_the_leaderboard(tmp_path):
    shutil.copytree(
        EXAMPLE,
        tmp_path / "plugin",
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    pip += ["--no-build-isolation", "--target", str(site), str(tmp_path / "plugin")]
    installed = subprocess.run(pip, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    board = tmp_path / "results" / "leaderboard.csv"
    run = cli(
        [
            "-m",
            "lra_bench",
            "task=listops",
            "attn=cosine",
            "attn.temperature=5",
            "trainer=smoke",
            "data.gen_workers=1",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.runs_dir={tmp_path / 'runs'}",
            f"paths.leaderboard={board}",
        ],
        tmp_path,
        site,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "task=listops attn=cosine seed=0 steps=6" in run.stdout
    shown = cli(["-m", "lra_bench.leaderboard", "show", str(board), "--smoke"], tmp_path, site)
    assert shown.returncode == 0, shown.stderr
    assert any(ln.startswith("| cosine") for ln in shown.stdout.splitlines()), shown.stdout
    kit = cli(
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:benchmark",  # pytest-benchmark, where installed, writes .benchmarks/ into the cwd
            str(tmp_path / "plugin" / "test_cosine_attention.py"),
        ],
        tmp_path,
        site,
    )
    assert kit.returncode == 0, kit.stdout[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "plugin",
        "results",
        "runs",
        "site",
    ]
