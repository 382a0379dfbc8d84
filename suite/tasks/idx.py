"""The IDX file format (MNIST, Fashion-MNIST): reading, validating, finding and fetching files.

IDX: 2 zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data. Files may be gzip-compressed (``.gz``).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from pathlib import Path

import torch

from suite.types import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
ENV_VAR = "OPTSUITE_DATA_DIR"  # a directory holding <dataset>/ subdirectories

# Official mirrors and accepted md5 sums per file: of the gzip file as published, or of its
# decompressed content (Debian's package recompresses the same bytes, so its .gz sums differ).
SOURCES = {
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12e480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        },
    ),
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",),
            "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432",),
            "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3",),
            "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c",),
        },
    ),
}
SYSTEM_DIRS = {"fashion_mnist": "fashion-mnist", "mnist": "mnist"}  # under /usr/share/datasets


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file of unsigned bytes (raw or gzip) into a uint8 tensor of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip raises these on truncated or non-gzip files
        raise DataError(f"cannot read IDX file {path}: {e}. Delete it and fetch it again.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'empty'}).")
    if data[2] != 0x08:
        raise DataError(f"{path}: IDX type code 0x{data[2]:02x} is not supported (expected 0x08, unsigned byte).")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: the header needs {header} bytes, the file has {len(data)}.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(torch.tensor(shape).prod()) if ndim else header
    if len(data) != expected:
        raise DataError(
            f"{path} has {len(data)} bytes but its header (shape {tuple(shape)}) promises {expected}: "
            f"the file is truncated or corrupt. Delete it and fetch it again."
        )
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


def candidate_dirs(name: str, data_dir: str | None) -> list[Path]:
    """Where the files of dataset ``name`` are looked for, in order."""
    dirs = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser() / name)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    dirs.append(cache / "optsuite" / name)
    dirs.append(Path("/usr/share/datasets") / SYSTEM_DIRS.get(name, name))
    return dirs


def _file_in(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _in_given_dir(name: str, data_dir: str) -> dict[str, Path]:
    """The four files from ``task.data_dir`` itself: a given directory is used or refused, never
    silently replaced by another copy (the run id records it)."""
    if not isinstance(data_dir, str) or not data_dir.strip():
        raise DataError(f"task.data_dir={data_dir!r} is invalid; give the directory holding the four IDX files "
                        f"of {name!r}, or null to search the usual places.")
    directory = Path(data_dir).expanduser()
    found = {key: _file_in(directory, stem) for key, stem in FILES.items()}
    missing = [FILES[key] for key, path in found.items() if path is None]
    if missing:
        what = "does not exist" if not directory.is_dir() else f"lacks {', '.join(missing)} (raw or .gz)"
        raise DataError(
            f"task.data_dir={data_dir}: the directory {what}. Put the four IDX files of {name!r} there "
            f"({', '.join(FILES.values())}, raw or .gz; python -m suite.tasks.idx {name} downloads them), "
            f"or drop task.data_dir to use the copy found in the usual places."
        )
    return found  # type: ignore[return-value]


def locate(name: str, data_dir: str | None = None) -> dict[str, Path]:
    """The four IDX files of ``name``: from ``data_dir`` when given (else an error), otherwise from
    the first of the usual directories holding all of them."""
    if data_dir is not None:
        return _in_given_dir(name, data_dir)
    dirs = candidate_dirs(name, None)
    for d in dirs:
        found = {key: _file_in(d, stem) for key, stem in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    searched = "\n  ".join(str(d) for d in dirs)
    apt = "  sudo apt-get install dataset-fashion-mnist\n" if name == "fashion_mnist" else ""
    raise DataError(
        f"dataset {name!r} not found. Looked for {', '.join(FILES.values())} (raw or .gz) in:\n  {searched}\n"
        f"Get the files with one of:\n{apt}"
        f"  python -m suite.tasks.idx {name}      (downloads the originals and checks their md5 sums)\n"
        f"or put them in a directory and pass task.data_dir=<dir> (or set {ENV_VAR})."
    )


def verified(path: Path, digests: tuple[str, ...]) -> bool:
    """True if the md5 of the gzip file or of its decompressed content is one of ``digests``."""
    raw = path.read_bytes()
    if hashlib.md5(raw).hexdigest() in digests:
        return True
    try:
        return hashlib.md5(gzip.decompress(raw)).hexdigest() in digests
    except (OSError, EOFError):
        return False


def download(name: str, dest: Path | None = None) -> Path:
    """Download the original gzip files of ``name`` into ``dest`` (default: the user cache)."""
    if name not in SOURCES:
        raise DataError(f"no download source for {name!r}; known: {', '.join(SOURCES)}.")
    base, sums = SOURCES[name]
    dest = dest or candidate_dirs(name, None)[-2]
    dest.mkdir(parents=True, exist_ok=True)
    for fname, digests in sums.items():
        target = dest / fname
        if not (target.is_file() and verified(target, digests)):
            tmp = target.with_suffix(".part")
            urllib.request.urlretrieve(base + fname, tmp)
            if not verified(tmp, digests):
                tmp.unlink()
                raise DataError(f"checksum mismatch for {base + fname}; nothing was kept. Try again later.")
            tmp.replace(target)
    return dest


if __name__ == "__main__":
    import sys

    for dataset in sys.argv[1:] or ["fashion_mnist"]:
        print(f"{dataset}: files in {download(dataset)}")
