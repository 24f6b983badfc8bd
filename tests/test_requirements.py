"""The declared torch floor provides every torch API the code calls (read from pyproject.toml)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import torch

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# torch APIs the training loop and the model depend on, and the release that introduced them
APIS = {
    "torch.is_autocast_enabled(device_type)": (2, 4),  # model.py, attention/base.py: every forward
    "torch.get_autocast_dtype(device_type)": (2, 4),  # attention/base.py: fp16-safe mask values
    "torch.amp.GradScaler(device, ...)": (2, 3),  # train.py
}


def torch_floor() -> tuple[int, ...]:
    match = re.search(r'"torch\s*>=\s*([0-9][0-9.]*)', PYPROJECT.read_text())
    assert match, "pyproject.toml declares no torch>= floor"
    return tuple(int(part) for part in match.group(1).split("."))


def test_torch_floor_provides_every_api_used():
    floor = torch_floor()
    too_new = {api: since for api, since in APIS.items() if floor[:2] < since}
    assert not too_new, f"pyproject allows torch {floor}, but these need newer: {too_new}"


def test_the_api_table_names_real_apis():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") is True
    assert torch.get_autocast_dtype("cpu") in (torch.bfloat16, torch.float16)
    assert next(iter(inspect.signature(torch.amp.GradScaler).parameters)) == "device"
