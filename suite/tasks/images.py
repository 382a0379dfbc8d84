"""MNIST-sized classifiers on real IDX data: ``fashion_mnist`` and ``mnist``.

Splits: the training file's last ``val_size`` images are the validation split (for tuning),
the rest (optionally only the first ``train_size``) train, and the t10k file is the test
split, used for final reporting only. Pixels are scaled to [0, 1]; ``normalize=true`` then
standardizes them with the training split's mean and std.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from suite.tasks.idx import locate, read_idx
from suite.tasks.options import positive_int
from suite.tasks.parts import seeded_model
from suite.tasks.stacking import Stacked, StackedLinear
from suite.types import ConfigError, DataError, Split, Task

MODELS = ("mlp", "cnn")


@functools.lru_cache(maxsize=4)
def load_idx_dataset(paths: tuple[tuple[str, Path], ...]) -> dict[str, Tensor]:
    """Read and cross-check the four files (images N×28×28 uint8, labels N in 0..9)."""
    arrays = {key: read_idx(path) for key, path in paths}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{part} files disagree: images {tuple(images.shape)}, labels {tuple(labels.shape)} "
                f"(expected N×28×28 images and N labels)."
            )
        if labels.numel() and int(labels.max()) > 9:
            raise DataError(f"{part} labels go up to {int(labels.max())}; expected classes 0-9.")
    return arrays


class MLP(nn.Sequential):
    def __init__(self, widths: list[int]):
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
        super().__init__(*layers)


class CNN(nn.Module):
    """DeepOBS-style "2c2d": conv5×5(c1)-relu-maxpool2, conv5×5(c2)-relu-maxpool2, dense-relu, dense."""

    def __init__(self, side: int, channels: list[int], dense: int, classes: int = 10):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.side = side
        self.fc1 = nn.Linear(c2 * (side // 4) ** 2, dense)
        self.fc2 = nn.Linear(dense, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.view(-1, 1, self.side, self.side)  # rows hold flat pixels; a view, no copy
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))

    @staticmethod
    def stacked(models: list[CNN]) -> StackedCNN:
        """K of these as one module, for the stacked engine (``suite.tasks.stacking``)."""
        return StackedCNN(models)


class StackedCNN(Stacked):
    """K 2c2d CNNs: conv1 is one conv with K·c1 filters, conv2 a grouped conv (``groups=K``)."""

    def __init__(self, models: list[CNN]):
        super().__init__()
        m0 = models[0]
        self.side, self.c1, self.c2 = m0.side, m0.conv1.out_channels, m0.conv2.out_channels
        self.w1 = nn.Parameter(torch.cat([m.conv1.weight.detach() for m in models]))  # (K·c1, 1, 5, 5)
        self.b1 = nn.Parameter(torch.cat([m.conv1.bias.detach() for m in models]))
        self.w2 = nn.Parameter(torch.cat([m.conv2.weight.detach() for m in models]))  # (K·c2, c1, 5, 5)
        self.b2 = nn.Parameter(torch.cat([m.conv2.bias.detach() for m in models]))
        self.fc1 = StackedLinear([m.fc1 for m in models])
        self.fc2 = StackedLinear([m.fc2 for m in models])

    def forward(self, x: Tensor, shared: bool) -> Tensor:
        k, s = self.w1.shape[0] // self.c1, self.side
        if shared:  # (b, s·s) -> (b, 1, s, s): every filter of every configuration sees the image
            x = F.conv2d(x.view(-1, 1, s, s), self.w1, self.b1, padding=2)
        else:  # (K, b, s·s) -> (b, K, s, s): configuration k's image is input channel k
            x = F.conv2d(x.transpose(0, 1).reshape(-1, k, s, s), self.w1, self.b1, padding=2, groups=k)
        x = F.max_pool2d(F.relu(x), 2)
        x = F.max_pool2d(F.relu(F.conv2d(x, self.w2, self.b2, padding=2, groups=k)), 2)
        x = x.reshape(x.shape[0], k, -1).transpose(0, 1)  # (K, b, c2·(s/4)²), channel-major like flatten
        return self.fc2(F.relu(self.fc1(x, False)), False)

    def config_state(self, k: int) -> dict[str, Tensor]:
        c1, c2 = self.c1, self.c2
        state = {"conv1.weight": self.w1[k * c1:(k + 1) * c1], "conv1.bias": self.b1[k * c1:(k + 1) * c1],
                 "conv2.weight": self.w2[k * c2:(k + 1) * c2], "conv2.bias": self.b2[k * c2:(k + 1) * c2]}
        for name in ("fc1", "fc2"):
            state.update({f"{name}.{key}": t for key, t in getattr(self, name).config_state(k).items()})
        return state


def _model(o: dict[str, Any], side: int):
    if o["model"] == "mlp":
        widths = [side * side, *[int(h) for h in o["hidden"]], 10]
        return f"mlp{'-'.join(map(str, widths))}", seeded_model(lambda: MLP(widths))
    if o["model"] == "cnn":
        channels, dense = [int(c) for c in o["cnn_channels"]], int(o["cnn_dense"])
        if len(channels) != 2:
            raise ConfigError("task.cnn_channels must list two channel counts, e.g. [32,64].")
        return f"cnn2c2d-{channels[0]}-{channels[1]}-{dense}", seeded_model(lambda: CNN(side, channels, dense))
    raise ConfigError(f"unknown model {o['model']!r}; valid: {', '.join(MODELS)} (task.model=<name>).")


def _build(name: str, o: dict[str, Any]) -> Task:
    model_name, make_model = _model(o, 28)
    arrays = load_idx_dataset(tuple(sorted(locate(name, o["data_dir"]).items())))
    images, labels = arrays["train_images"], arrays["train_labels"]
    val_size = positive_int(o, "val_size", name, allow_zero=True)
    if val_size >= len(images):
        raise ConfigError(f"task {name!r}: val_size={val_size} leaves no training images (the file has {len(images)}).")
    cut = len(images) - val_size
    train_size = cut if o["train_size"] is None else positive_int(o, "train_size", name)
    if train_size > cut:
        raise ConfigError(f"task {name!r}: train_size={train_size} exceeds the {cut} training images left after validation.")
    side = images.shape[1]
    if images.shape[1:] != (28, 28):
        raise DataError(f"{name}: images are {tuple(images.shape[1:])}, expected 28×28.")

    def flat(x: Tensor) -> Tensor:
        return x.reshape(len(x), side * side).float() / 255.0

    train_x, val_x, test_x = flat(images[:train_size]), flat(images[cut:]), flat(arrays["test_images"])
    if o["normalize"]:
        mean, std = train_x.mean(), train_x.std()
        train_x, val_x, test_x = ((t - mean) / std for t in (train_x, val_x, test_x))
    return Task(
        name=name, model_name=model_name,
        train=Split(train_x, labels[:train_size].long()), val=Split(val_x, labels[cut:].long()),
        test=Split(test_x, arrays["test_labels"].long()),
        make_model=make_model, loss=F.cross_entropy, classifier=True,
    )


def build_fashion_mnist(options: dict[str, Any]) -> Task:
    return _build("fashion_mnist", options)


def build_mnist(options: dict[str, Any]) -> Task:
    return _build("mnist", options)
