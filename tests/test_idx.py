"""The IDX reader and the image tasks' data loading, on IDX files the tests write and on the real
Fashion-MNIST files when they are installed."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from suite.tasks import build_task
from suite.tasks.idx import ENV_VAR, FILES, SOURCES, candidate_dirs, locate, read_idx, verified
from suite.train import train
from suite.types import ConfigError, DataError, EvalSpec, RunSpec


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (5, 28, 28), (3, 4, 2)])
def test_reads_raw_and_gzip(tmp_path, suffix, shape, write_idx):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    tensor = read_idx(write_idx(tmp_path / f"f-idx{suffix}", array))
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == shape
    assert np.array_equal(tensor.numpy(), array)


def broken(tmp_path, name: str, data: bytes, gz: bool = False):
    path = tmp_path / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


GOOD = b"\x00\x00\x08\x02" + (3).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(range(6))
BROKEN = {  # name -> (file content, what the message must say)
    "truncated-data": (GOOD[:-2], "truncated or corrupt"),
    "extra-data": (GOOD + b"\x00", "promises"),
    "truncated-header": (GOOD[:9], "is truncated: the header needs 12 bytes"),
    "wrong-magic": (b"\x01\x02" + GOOD[2:], "not an IDX file"),
    "text-file": (b"this is not IDX data\n", "not an IDX file"),
    "empty": (b"", "not an IDX file"),
    "float-type-code": (GOOD[:2] + b"\x0d" + GOOD[3:], "type code 0x0d is not supported"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", BROKEN)
def test_rejects_broken_files(tmp_path, case, gz):
    data, message = BROKEN[case]
    path = broken(tmp_path, case, data, gz)
    with pytest.raises(DataError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_writer_faults_are_caught(tmp_path, write_idx):
    """The same faults produced by the conftest writer (header lies about the data)."""
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    with pytest.raises(DataError, match="type code 0x0b"):
        read_idx(write_idx(tmp_path / "a.gz", images, type_code=0x0B))
    with pytest.raises(DataError, match=r"header \(shape \(5, 28, 28\)\) promises 3936"):
        read_idx(write_idx(tmp_path / "b", images, shape=(5, 28, 28)))
    with pytest.raises(DataError, match="bad magic number 0800"):
        read_idx(write_idx(tmp_path / "c.gz", images, magic=b"\x08\x00"))


def test_good_reference_file_reads(tmp_path):
    """The byte string the broken cases are cut from is itself valid (so the cases test one fault each)."""
    assert read_idx(broken(tmp_path, "good", GOOD)).tolist() == [[0, 1], [2, 3], [4, 5]]


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(GOOD * 50)[:-10])
    with pytest.raises(DataError, match="cannot read IDX file .*fetch it again"):
        read_idx(path)


def test_not_gzip_but_named_gz(tmp_path):
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(broken(tmp_path, "plain", GOOD, gz=False).rename(tmp_path / "plain.gz"))


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_fake_mnist_builds_and_trains(tmp_path, gz, write_dataset, fake_images):
    """The real loader on files the test wrote: splits, scaling, and a few training steps."""
    directory = write_dataset(tmp_path / "m", n_train=120, n_test=30, gz=gz)
    task = build_task({"name": "mnist", "data_dir": str(directory), "val_size": 20, "hidden": [32]})
    images, labels = fake_images(120, seed=1)
    assert (task.n_train, len(task.val), len(task.test)) == (100, 20, 30)
    assert task.train.x.shape == (100, 784) and task.train.x.dtype == torch.float32
    assert 0.0 <= task.train.x.min() and task.train.x.max() <= 1.0
    assert torch.equal(task.val.x, torch.from_numpy(images[100:]).reshape(20, 784).float() / 255)
    assert task.val.y.tolist() == labels[100:].tolist() and task.train.y.dtype == torch.long
    spec = RunSpec(task="mnist", optimizer="adam", hparams={"beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                                            "weight_decay": 0.0},
                   lr=1e-2, batch_size=20, epochs=3.0, eval=EvalSpec(points=3))
    rows = train(task, spec).rows
    assert rows[-1]["step"] == 15
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    assert rows[-1]["test_accuracy"] > 0.5  # the fake classes are learnable


def test_train_size_and_normalize(fake_mnist_options):
    task = build_task({**fake_mnist_options, "train_size": 40, "normalize": True})
    assert task.n_train == 40 and len(task.val) == 20
    assert abs(task.train.x.mean().item()) < 1e-5 and task.train.x.std().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("options,message", [
    ({"val_size": 120}, "leaves no training images"),
    ({"train_size": 101}, "exceeds the 100 training images"),
    ({"train_size": 0}, "train_size=0 must be an integer >= 1"),
    ({"model": "resnet"}, "unknown model 'resnet'; valid: mlp, cnn"),
    ({"cnn_channels": [4], "model": "cnn"}, "two channel counts"),
    ({"depth": 3}, "has no option depth; valid options"),
])
def test_bad_options(fake_mnist_options, options, message):
    with pytest.raises(ConfigError, match=message):
        build_task({**fake_mnist_options, **options})


def test_labels_and_images_disagree(tmp_path, write_dataset, write_idx):
    directory = write_dataset(tmp_path / "m")
    write_idx(directory / (FILES["train_labels"] + ".gz"), np.zeros(119, dtype=np.uint8))
    with pytest.raises(DataError, match=r"train files disagree: images \(120, 28, 28\), labels \(119,\)"):
        build_task({"name": "mnist", "data_dir": str(directory), "val_size": 20})


def test_labels_out_of_range(tmp_path, write_dataset, write_idx):
    directory = write_dataset(tmp_path / "m")
    write_idx(directory / (FILES["test_labels"] + ".gz"), np.full(30, 10, dtype=np.uint8))
    with pytest.raises(DataError, match="test labels go up to 10; expected classes 0-9"):
        build_task({"name": "mnist", "data_dir": str(directory), "val_size": 20})


def test_wrong_image_size(tmp_path, write_dataset, write_idx):
    directory = write_dataset(tmp_path / "m")
    write_idx(directory / (FILES["train_images"] + ".gz"), np.zeros((120, 20, 20), dtype=np.uint8))
    with pytest.raises(DataError, match="expected 28×28"):
        build_task({"name": "mnist", "data_dir": str(directory), "val_size": 20})


def test_corrupt_file_in_dataset(tmp_path, write_dataset):
    directory = write_dataset(tmp_path / "m", gz=False)
    path = directory / FILES["test_images"]
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        build_task({"name": "mnist", "data_dir": str(directory), "val_size": 20})


def test_missing_files_list_searched_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    dirs = candidate_dirs("mnist", None)
    assert dirs[:2] == [tmp_path / "env" / "mnist", tmp_path / "cache" / "optsuite" / "mnist"]
    assert str(dirs[2]) == "/usr/share/datasets/mnist"
    if all((dirs[2] / s).is_file() or (dirs[2] / f"{s}.gz").is_file() for s in FILES.values()):
        pytest.skip("MNIST is installed system-wide, so no file is missing")
    with pytest.raises(DataError) as err:
        build_task({"name": "mnist"})
    message = str(err.value)
    assert all(str(d) in message for d in dirs)
    assert "task.data_dir=<dir>" in message and ENV_VAR in message and "python -m suite.tasks.idx mnist" in message


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_a_given_data_dir_is_used_or_refused_never_replaced(tmp_path, monkeypatch, write_dataset, name):
    """The files exist elsewhere (user cache; the system copy for fashion_mnist), yet a given
    directory that lacks them is an error naming it and what is missing, not a silent fallback."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_dataset(tmp_path / "cache" / "optsuite" / name)
    with pytest.raises(DataError) as err:
        build_task({"name": name, "data_dir": str(tmp_path / "nonexistent"), "val_size": 20})
    assert f"task.data_dir={tmp_path / 'nonexistent'}: the directory does not exist" in str(err.value)
    partial = write_dataset(tmp_path / "partial")
    (partial / (FILES["test_labels"] + ".gz")).unlink()
    with pytest.raises(DataError) as err:
        build_task({"name": name, "data_dir": str(partial), "val_size": 20})
    assert f"the directory lacks {FILES['test_labels']} (raw or .gz)." in str(err.value)
    assert "drop task.data_dir" in str(err.value)


def test_search_order(tmp_path, monkeypatch, write_dataset):
    """data_dir wins over the env var, which wins over the user cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    cache = write_dataset(tmp_path / "cache" / "optsuite" / "mnist")
    assert locate("mnist")["train_images"].parent == cache
    env = write_dataset(tmp_path / "env" / "mnist", gz=False)
    assert locate("mnist")["train_images"] == env / FILES["train_images"]
    given = write_dataset(tmp_path / "given")
    assert locate("mnist", str(given))["test_labels"] == given / (FILES["test_labels"] + ".gz")


def test_download_checksums_are_verified(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"not the dataset"))
    assert not verified(path, SOURCES["mnist"][1]["train-images-idx3-ubyte.gz"])


@pytest.fixture
def real_files(fashion_mnist_dir):
    if fashion_mnist_dir is None:
        pytest.skip("Fashion-MNIST is not installed (sudo apt-get install dataset-fashion-mnist, "
                    "or python -m suite.tasks.idx fashion_mnist)")
    return locate("fashion_mnist")


def test_real_fashion_mnist_files(real_files):
    files = real_files
    train_x, train_y = read_idx(files["train_images"]), read_idx(files["train_labels"])
    test_x, test_y = read_idx(files["test_images"]), read_idx(files["test_labels"])
    assert tuple(train_x.shape) == (60000, 28, 28) and tuple(test_x.shape) == (10000, 28, 28)
    assert tuple(train_y.shape) == (60000,) and tuple(test_y.shape) == (10000,)
    assert torch.bincount(train_y.long()).tolist() == [6000] * 10
    assert torch.bincount(test_y.long()).tolist() == [1000] * 10
    for fname, digests in SOURCES["fashion_mnist"][1].items():
        path = files["train_images"].parent / fname
        if path.is_file():  # the checksums the downloader trusts also accept the installed files
            assert verified(path, digests), fname


def test_real_fashion_mnist_task_splits(real_files):
    task = build_task({"name": "fashion_mnist", "train_size": 1000})
    raw = read_idx(real_files["train_images"])
    assert (task.n_train, len(task.val), len(task.test)) == (1000, 10000, 10000)
    assert torch.equal(task.val.x[:5], raw[50000:50005].reshape(5, 784).float() / 255)  # last 10k: validation
    assert torch.equal(task.train.x[:5], raw[:5].reshape(5, 784).float() / 255)
    assert task.model_name == "mlp784-256-128-10" and task.classifier
