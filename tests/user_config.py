"""A user's optimizer brought in by YAML, as the console scripts see it: configs composed with the
user's config directory on the search path, that directory's YAML files, the environment that
makes the user's package importable, and the registry restored after each test. (Plain helpers,
imported by the bring-your-own and snapshot tests; ``registry_restored`` is an autouse fixture
wherever it is imported.)
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from suite.cli import CONF_DIR
from suite.optim.registry import OPTIMIZERS

TESTS = Path(__file__).resolve().parent
EXAMPLES = TESTS.parent / "examples"


@pytest.fixture(autouse=True)
def registry_restored(monkeypatch):
    """Entries registered by a test leave with it (the registry is process-wide)."""
    before = set(OPTIMIZERS)
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the user's package is importable, as with PYTHONPATH
    yield
    for name in set(OPTIMIZERS) - before:
        del OPTIMIZERS[name]
    HydraConfig.instance().cfg = None


def byo_cfg(conf_dir: Path, *overrides: str, config_name: str = "config"):
    """The suite's config composed with the user's config directory on the search path, and
    Hydra's runtime config set as a console script has it (what names the file in messages)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=[f"hydra.searchpath=[file://{conf_dir}]", *overrides],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def write_yaml(directory: Path, name: str, text: str) -> Path:
    path = directory / "optimizer" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return directory


def user_env() -> dict[str, str]:
    """The environment of a user's console script: the example package and the tests' optimizers importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(TESTS), os.environ.get("PYTHONPATH", "")])}
