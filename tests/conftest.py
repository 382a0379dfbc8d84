"""Shared fixtures: composed Hydra configs, temporary results dirs, IDX files written by the tests.

Nothing here is mocked: the IDX writer produces real IDX files (raw or gzip) that the suite's
own reader and task builders load, and ``compose`` runs Hydra's real config composition.
"""
from __future__ import annotations

import contextlib
import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from suite.cli import CONF_DIR
from suite.tasks.idx import FILES, candidate_dirs


def _compose(*overrides: str, config_name: str = "config"):
    """``conf/<config_name>.yaml`` composed with ``overrides``, as Hydra would for ``suite-train``."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def _write_idx(path: Path, array: np.ndarray, *, type_code: int = 0x08, magic: bytes = b"\x00\x00",
              shape: tuple[int, ...] | None = None) -> Path:
    """Write ``array`` (uint8) as an IDX file; ``.gz`` paths are gzip-compressed.

    ``type_code``, ``magic`` and ``shape`` (the header's shape) can be set to wrong values to
    produce the broken files the reader must reject.
    """
    shape = array.shape if shape is None else shape
    header = magic + bytes([type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _fake_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28×28 uint8 images whose class is learnable: label c lights up rows 2c..2c+3."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.uint8) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c + 2:2 * c + 6, 4:24] = 230
    return images, labels


def _write_dataset(directory: Path, n_train: int = 120, n_test: int = 30, gz: bool = True) -> Path:
    """The four MNIST-format IDX files in ``directory`` (what ``task.data_dir`` points at)."""
    suffix = ".gz" if gz else ""
    for part, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = _fake_images(n, seed)
        _write_idx(directory / (FILES[f"{part}_images"] + suffix), images)
        _write_idx(directory / (FILES[f"{part}_labels"] + suffix), labels)
    return directory


def _real_fashion_mnist_dir() -> Path | None:
    """The directory the loader would use for the real Fashion-MNIST files, or None."""
    for d in candidate_dirs("fashion_mnist", None):
        if all((d / stem).is_file() or (d / f"{stem}.gz").is_file() for stem in FILES.values()):
            return d
    return None


@pytest.fixture(autouse=True)
def one_thread(request):
    """Tests check behaviour, not speed: run torch on one intra-op thread.

    On a shared 2-core machine, torch's second thread waits on a core another process holds and
    small ops (a 28×28 conv) run ~100× slower. Benchmarks (tests that use pytest-benchmark's
    ``benchmark`` fixture) keep torch's default, since they measure the real configuration.
    """
    if "benchmark" in request.fixturenames:
        yield
        return
    with _torch_threads(1):
        yield


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def torch_threads():
    """``with torch_threads(1): ...``: for module-scoped fixtures that train before the per-test
    ``one_thread`` applies."""
    return _torch_threads


# Helpers are handed out as fixtures (not imported from here): tests/benchmarks/ has its own
# conftest module, so ``from conftest import ...`` would be ambiguous.

@pytest.fixture(scope="session")
def compose():
    """``compose(*overrides, config_name="config")`` -> the composed DictConfig."""
    return _compose


@pytest.fixture(scope="session")
def write_idx():
    """``write_idx(path, uint8_array, type_code=, magic=, shape=)``: one IDX file (gzip if .gz)."""
    return _write_idx


@pytest.fixture(scope="session")
def write_dataset():
    """``write_dataset(dir, n_train=120, n_test=30, gz=True)``: the four MNIST-format IDX files."""
    return _write_dataset


@pytest.fixture(scope="session")
def fake_images():
    """``fake_images(n, seed)`` -> (images, labels) as written by ``write_dataset``."""
    return _fake_images


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path | None:
    """Where the real Fashion-MNIST files are (the loader's search order), or None."""
    return _real_fashion_mnist_dir()


@pytest.fixture(scope="session")
def suite_train() -> str:
    """The ``suite-train`` console script of this environment."""
    path = Path(sys.executable).with_name("suite-train")
    if not path.is_file():
        pytest.fail(f"console script {path} not found; install the package (make install)")
    return str(path)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def fake_mnist_dir(tmp_path: Path) -> Path:
    """A tiny MNIST directory written by the test: 120 train and 30 test images (gzip)."""
    return _write_dataset(tmp_path / "mnist")


@pytest.fixture
def fake_mnist_options(fake_mnist_dir: Path) -> dict:
    """Options that build ``mnist`` from the fake files: 100 train, 20 validation, 30 test."""
    return {"name": "mnist", "data_dir": str(fake_mnist_dir), "val_size": 20}
