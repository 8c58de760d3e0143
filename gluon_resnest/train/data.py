"""Image data for training and evaluation.

Sources give ``(H, W, 3) uint8 RGB, label`` pairs: :class:`DigitsSource` (scikit-learn's
handwritten digits, the embedded demo set), :class:`FolderSource` (``root/<class>/<image>``)
and :class:`RecordSource` (MXNet RecordIO ``.rec`` + ``.idx``). Transforms turn an image into
a normalised ``(3, S, S) float32`` array; :class:`BatchLoader` yields deterministic batches:
the order of epoch ``e`` and the augmentation of sample ``i`` depend only on ``(seed, e, i)``,
so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..data.transforms import (
    IMAGE_EXTENSIONS,
    INTERPOLATION,
    CorruptImageError,
    EvalTransform,
    decode,
    normalize,
)
from . import recipe

__all__ = ["CorruptImageError", "DigitsSource", "FolderSource", "RecordSource", "SubsetSource",
           "open_data", "open_source", "train_transform", "eval_transform",
           "eval_transform_for", "BatchLoader", "write_folder", "write_record", "IMAGE_EXTENSIONS", "decode"]

# AlexNet's PCA lighting (ImageNet RGB eigen-decomposition, values on a 0..1 scale)
_EIGVAL = np.array([55.46, 4.794, 1.148], dtype=np.float32) / 255.0
_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                    [-0.5808, -0.0045, -0.8140],
                    [-0.5836, -0.6948, 0.4203]], dtype=np.float32)


# -- sources --------------------------------------------------------------------------------
class DigitsSource:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), upsampled to ``size``.

    A fixed stratified split (seed 0, 20 % validation) that does not depend on the run seed:
    ``split='train'`` has 1437 images, ``'val'`` 360.
    """

    def __init__(self, split: str = "train", size: int = 32) -> None:
        try:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split
        except ImportError:
            raise ImportError("the demo data set needs scikit-learn: pip install scikit-learn"
                              ) from None
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        digits = load_digits()
        idx = np.arange(len(digits.target))
        train, val = train_test_split(idx, test_size=0.2, random_state=0,
                                      stratify=digits.target)
        keep = np.sort(train if split == "train" else val)
        imgs = (digits.images[keep] * (255.0 / 16.0)).astype(np.float32)
        up = [cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in imgs]
        gray = np.clip(np.rint(np.stack(up)), 0, 255).astype(np.uint8)
        self.images = np.repeat(gray[..., None], 3, axis=3)
        self.labels = digits.target[keep].astype(np.int64)
        self.classes: Optional[List[str]] = [str(c) for c in range(10)]
        self.description = f"scikit-learn digits ({split}, {len(keep)} images, {size}x{size})"

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, i: int) -> Tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])

    def name(self, i: int) -> str:
        return f"digits[{i}]"


class FolderSource:
    """Images in ``root/<class name>/<file>``; classes are the sorted sub-folder names."""

    def __init__(self, root: str) -> None:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist")
        classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        items: List[Tuple[str, int]] = []
        for label, cls in enumerate(classes):
            for dirpath, _, files in sorted(os.walk(os.path.join(root, cls))):
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        items.append((os.path.join(dirpath, f), label))
        if not items:
            raise ValueError(f"no images found in {root!r}: expected {root}/<class>/<image> with "
                             f"extensions {', '.join(IMAGE_EXTENSIONS)}")
        self.root, self.items = root, items
        self.classes: Optional[List[str]] = classes
        self.description = f"image folder {root} ({len(items)} images, {len(classes)} classes)"

    def __len__(self) -> int:
        return len(self.items)

    def read(self, i: int) -> Tuple[np.ndarray, int]:
        path, label = self.items[i]
        try:
            with open(path, "rb") as f:
                buf = f.read()
        except OSError as err:
            raise CorruptImageError(f"cannot read image {path}: {err.strerror}") from None
        return decode(buf, path), label

    def name(self, i: int) -> str:
        return self.items[i][0]


class RecordSource:
    """MXNet RecordIO: ``x.rec`` with its index ``x.idx`` (as written by im2rec).

    Classes come from ``x.lst`` when it is there (im2rec's list: index, label, path);
    otherwise they are unknown until :meth:`scan_labels` reads every record header.
    """

    def __init__(self, rec: str) -> None:
        import mxnet as mx
        if not os.path.isfile(rec):
            raise FileNotFoundError(f"RecordIO file {rec!r} does not exist")
        idx = os.path.splitext(rec)[0] + ".idx"
        if not os.path.isfile(idx):
            raise FileNotFoundError(f"RecordIO index {idx!r} does not exist (needed next to "
                                    f"{rec!r}; im2rec writes it)")
        self._mx, self.rec, self.idx = mx, rec, idx
        self._local = threading.local()
        self.keys = list(self._handle().keys)
        if not self.keys:
            raise ValueError(f"RecordIO file {rec!r} holds no records")
        self.classes: Optional[List[str]] = None
        lst = os.path.splitext(rec)[0] + ".lst"
        if os.path.isfile(lst):
            labels = set()
            with open(lst, encoding="utf-8") as f:
                for line in f:
                    parts = line.rstrip("\n").split("\t")
                    if len(parts) >= 3:
                        labels.add(int(float(parts[1])))
            if labels:
                self.classes = [str(c) for c in range(max(labels) + 1)]
        self.description = f"RecordIO {rec} ({len(self.keys)} records)"

    def _handle(self):
        h = getattr(self._local, "handle", None)
        if h is None:
            h = self._mx.recordio.MXIndexedRecordIO(self.idx, self.rec, "r")
            self._local.handle = h
        return h

    def __len__(self) -> int:
        return len(self.keys)

    def _record(self, i: int):
        try:
            header, buf = self._mx.recordio.unpack(self._handle().read_idx(self.keys[i]))
        except Exception as err:  # noqa: BLE001 - a broken record, whatever the cause
            raise CorruptImageError(f"cannot read record {self.name(i)}: {err}") from None
        return int(np.asarray(header.label).ravel()[0]), buf

    def read(self, i: int) -> Tuple[np.ndarray, int]:
        label, buf = self._record(i)
        return decode(buf, self.name(i)), label

    def scan_labels(self) -> List[int]:
        """Every record's label (reads the whole file once)."""
        return [self._record(i)[0] for i in range(len(self))]

    def name(self, i: int) -> str:
        return f"{self.rec}#{self.keys[i]}"


class SubsetSource:
    """The samples ``indices`` of another source."""

    def __init__(self, source: Any, indices: Sequence[int], what: str) -> None:
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        self.classes = source.classes
        self.description = f"{what} of {source.description}"

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, i: int) -> Tuple[np.ndarray, int]:
        return self.source.read(int(self.indices[i]))

    def name(self, i: int) -> str:
        return self.source.name(int(self.indices[i]))


def open_source(spec: str, key: str, demo_split: str = "train", demo_size: int = 32):
    """A source for a config value: 'demo', a .rec file, or an image folder."""
    if spec == "demo":
        return DigitsSource(demo_split, demo_size)
    path = os.path.expanduser(str(spec))
    if not os.path.exists(path):
        raise FileNotFoundError(f"data path {spec!r} ({key}) does not exist")
    if path.endswith(".rec"):
        return RecordSource(path)
    if os.path.isdir(path):
        return FolderSource(path)
    raise ValueError(f"data path {spec!r} ({key}) is neither an image folder nor a .rec file")


def open_data(data_cfg: Dict[str, Any]) -> Tuple[Any, Optional[Any]]:
    """(train source, validation source or None) for the ``data`` section of a config.

    A folder with ``train/`` and ``val/`` inside (or ``train.rec`` and ``val.rec``) gives both.
    Without ``data.val``, ``data.val_fraction`` of the training set is held out (fixed split).
    """
    train, val = data_cfg["train"], data_cfg["val"]
    if train is None:
        raise ValueError("no training data: set data.train (or pass --data PATH: an image "
                         "folder, a .rec file, or 'demo')")
    size = data_cfg["demo_size"]
    root = os.path.expanduser(str(train))
    if val is None and train != "demo" and os.path.isdir(root):
        for tr, va in (("train", "val"), ("train.rec", "val.rec")):
            if os.path.exists(os.path.join(root, tr)) and os.path.exists(os.path.join(root, va)):
                train, val = os.path.join(root, tr), os.path.join(root, va)
                break
    if val is None and train == "demo":
        val = "demo"
    train_src = open_source(train, "data.train", "train", size)
    val_src = open_source(val, "data.val", "val", size) if val is not None else None
    if val_src is None and data_cfg["val_fraction"] > 0:
        order = np.random.default_rng(0).permutation(len(train_src))
        n_val = max(1, int(round(len(order) * data_cfg["val_fraction"])))
        val_src = SubsetSource(train_src, np.sort(order[:n_val]), "held-out part")
        train_src = SubsetSource(train_src, np.sort(order[n_val:]), "training part")
    limit = data_cfg.get("limit")
    if limit is not None:
        train_src, val_src = (_limit(s, limit) if s is not None else None
                              for s in (train_src, val_src))
    if (val_src is not None and train_src.classes is not None and val_src.classes is not None
            and train_src.classes != val_src.classes):
        raise ValueError(f"training and validation classes differ: {len(train_src.classes)} "
                         f"({_head(train_src.classes)}) vs {len(val_src.classes)} "
                         f"({_head(val_src.classes)})")
    return train_src, val_src


def _limit(source: Any, n: int) -> Any:
    """At most n samples of a source, a fixed random subset (kept in source order)."""
    if len(source) <= n:
        return source
    keep = np.sort(np.random.default_rng(0).permutation(len(source))[:n])
    return SubsetSource(source, keep, f"{n} images")


def _head(names: Sequence[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


# -- transforms -----------------------------------------------------------------------------
def random_resized_crop(img: np.ndarray, rng: np.random.Generator, size: int,
                        area: Sequence[float], ratio: Sequence[float], interp: int) -> np.ndarray:
    """Crop a random area fraction in ``area`` with aspect ratio in ``ratio`` (log-uniform),
    resized to ``size x size``; falls back to the central square after 10 tries."""
    h, w = img.shape[:2]
    for _ in range(10):
        target = h * w * rng.uniform(area[0], area[1])
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            break
    else:
        ch = cw = min(h, w)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (size, size), interpolation=interp)


def train_transform(img: np.ndarray, rng: np.random.Generator, data: Dict[str, Any],
                    aug: Dict[str, Any]) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, S, S) float32: random-resized crop, flip, AutoAugment, colour
    jitter, PCA lighting, normalisation."""
    img = random_resized_crop(img, rng, data["train_size"], aug["crop_area"], aug["crop_ratio"],
                              INTERPOLATION[data["interpolation"]])
    if aug["flip"] and rng.random() < 0.5:
        img = img[:, ::-1]
    if aug["auto_augment"]:
        img = recipe.auto_augment(np.ascontiguousarray(img), rng)
    x = img.astype(np.float32) / 255.0
    j = aug["jitter"]
    if j > 0:
        fb, fc, fs = rng.uniform(max(0.0, 1 - j), 1 + j, size=3)
        x = x * fb
        gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = (x - gray.mean()) * fc + gray.mean()
        gray = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        x = np.clip((x - gray) * fs + gray, 0.0, 1.0)
    if aug["lighting"] > 0:
        alpha = rng.normal(0.0, aug["lighting"], size=3).astype(np.float32)
        x = x + _EIGVEC @ (alpha * _EIGVAL)
    return normalize(x, data["mean"], data["std"])


def eval_transform_for(data: Dict[str, Any]) -> EvalTransform:
    """The evaluation transform of a config's ``data`` section (``test_size``, ``crop_pct``,
    ``interpolation``, ``mean``, ``std``)."""
    return EvalTransform(data["test_size"], data["crop_pct"], data["interpolation"],
                         data["mean"], data["std"])


def eval_transform(img: np.ndarray, data: Dict[str, Any]) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, S, S) float32 with :func:`eval_transform_for` of ``data``."""
    return eval_transform_for(data)(img)


# -- batches --------------------------------------------------------------------------------
class BatchLoader:
    """Deterministic batches of a source.

    ``train=True``: epoch ``e`` visits the samples in the order ``permutation(seed, e)``, drops
    the last incomplete batch and augments sample ``i`` with a generator seeded by
    ``(seed, e, i)``. With ``part=(r, n)`` this process takes the r-th of n equal slices of
    every global batch (data-parallel workers). ``train=False``: every sample once, in order.
    Unreadable samples raise :class:`CorruptImageError` (``on_corrupt='error'``) or are left out
    of their batch and recorded in :attr:`skipped` (``'skip'``); ``skip_hint`` is how the error
    tells the user to ask for ``'skip'``. Labels outside
    ``[0, classes)`` raise ValueError. ``data``: the config's ``data`` section, or for
    ``train=False`` an :class:`~gluon_resnest.data.transforms.EvalTransform` (a model's own).
    """

    def __init__(self, source: Any, batch_size: int, data: Union[Dict[str, Any], EvalTransform],
                 aug: Optional[Dict[str, Any]] = None, train: bool = True, seed: int = 0,
                 workers: int = 0, on_corrupt: str = "error", part: Tuple[int, int] = (0, 1),
                 classes: Optional[int] = None,
                 skip_hint: str = "set data.on_corrupt=skip") -> None:
        if batch_size % part[1]:
            raise ValueError(f"batch size {batch_size} is not divisible by the {part[1]} "
                             f"data-parallel workers")
        if train and len(source) < batch_size:
            raise ValueError(f"the training set ({len(source)} images) is smaller than one batch "
                             f"({batch_size}); lower optim.batch_size")
        self.source, self.batch_size, self.data, self.aug = source, batch_size, data, aug
        self.train, self.seed, self.on_corrupt, self.part = train, seed, on_corrupt, part
        self.classes = classes
        self.skip_hint = skip_hint     # how the caller's user asks for 'skip' (key or flag)
        if train and isinstance(data, EvalTransform):
            raise TypeError("a training BatchLoader needs the config's data section, not an "
                            "EvalTransform")
        self.eval_transform: Optional[EvalTransform] = None
        if not train:
            self.eval_transform = (data if isinstance(data, EvalTransform)
                                   else eval_transform_for(data))
        self.skipped: List[Tuple[str, str]] = []
        self._pool = ThreadPoolExecutor(workers) if workers > 0 else None

    def __len__(self) -> int:
        n = len(self.source)
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        if not self.train:
            return np.arange(len(self.source))
        return np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(len(self.source))

    def _indices(self, order: np.ndarray, it: int) -> np.ndarray:
        idx = order[it * self.batch_size:(it + 1) * self.batch_size]
        if self.train and self.part[1] > 1:
            b = self.batch_size // self.part[1]
            idx = idx[self.part[0] * b:(self.part[0] + 1) * b]
        return idx

    def _load(self, i: int, epoch: int) -> Optional[Tuple[np.ndarray, int]]:
        try:
            img, label = self.source.read(int(i))
        except CorruptImageError as err:
            if self.on_corrupt == "skip":
                self.skipped.append((self.source.name(int(i)), str(err)))
                return None
            raise CorruptImageError(f"{err} ({self.skip_hint} to skip unreadable images)"
                                    ) from None
        if self.classes is not None and not 0 <= label < self.classes:
            raise ValueError(f"{self.source.name(int(i))} has label {label}, but the model has "
                             f"{self.classes} classes (labels 0..{self.classes - 1}); set "
                             f"model.classes to the data set's class count")
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, int(i)])
            return train_transform(img, rng, self.data, self.aug), label
        return self.eval_transform(img), label

    def _submit(self, order: np.ndarray, it: int, epoch: int):
        idx = self._indices(order, it)
        if self._pool is None:
            return [(self._load, i) for i in idx]
        return [self._pool.submit(self._load, i, epoch) for i in idx]

    def _collect(self, pending, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        loaded = [p[0](p[1], epoch) if isinstance(p, tuple) else p.result() for p in pending]
        loaded = [s for s in loaded if s is not None]
        if not loaded:
            return (np.zeros((0, 3, 1, 1), np.float32), np.zeros((0,), np.int64))
        return np.stack([s[0] for s in loaded]), np.array([s[1] for s in loaded], np.int64)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Tuple[int, np.ndarray,
                                                                         np.ndarray]]:
        """Yield ``(iteration, x (N, 3, S, S) float32, y (N,) int64)`` from ``start`` on."""
        order, n = self.order(epoch), len(self)
        pending = self._submit(order, start, epoch) if start < n else None
        for it in range(start, n):
            nxt = self._submit(order, it + 1, epoch) if it + 1 < n else None
            x, y = self._collect(pending, epoch)
            pending = nxt
            yield it, x, y

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# -- writing data sets ----------------------------------------------------------------------
def write_folder(source: Any, root: str) -> int:
    """Write a source as ``root/<class>/<index>.png``; returns the number of images."""
    names = source.classes or [str(c) for c in range(max(source.read(i)[1]
                                                          for i in range(len(source))) + 1)]
    for i in range(len(source)):
        img, label = source.read(i)
        folder = os.path.join(root, names[label])
        os.makedirs(folder, exist_ok=True)
        cv2.imwrite(os.path.join(folder, f"{i:05d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return len(source)


def write_record(source: Any, prefix: str) -> int:
    """Write a source as MXNet RecordIO ``prefix.rec`` / ``prefix.idx`` / ``prefix.lst`` (PNG)."""
    import mxnet as mx
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    rec = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    with open(prefix + ".lst", "w", encoding="utf-8") as lst:
        for i in range(len(source)):
            img, label = source.read(i)
            header = mx.recordio.IRHeader(0, float(label), i, 0)
            rec.write_idx(i, mx.recordio.pack_img(header, cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                                                  img_fmt=".png"))
            lst.write(f"{i}\t{label}\t{i:05d}.png\n")
    rec.close()
    return len(source)
