"""Images in, model-ready arrays out: timm preprocessing, image folders and labelled datasets.

Preprocessing always comes from the model's timm data config (the one written into every
manifest as ``data_config``), so predictions and accuracy use exactly the resize, crop and
normalisation the checkpoint was trained with.

Labelled datasets come in two layouts:

* class sub-folders (``root/<class>/<image>``): for a 1000-class model whose folders are all ImageNet
  synsets (``n01530575``), each folder gets its ImageNet-1k index from timm's offline synset table
  (``imagenet_synsets.txt``, sorted, as ImageNet defines it), so a subset such as ``n01530575``,
  ``n01558993`` is labelled 10, 15 — not 0, 1. Otherwise sorted folder names give the indices, as in
  torchvision's ``ImageFolder``. ``LabelledImages.mapping`` says which rule was used;
* a flat folder with a labels file: one image per line, ``filename label`` (whitespace) or
  ``filename,label`` (CSV, an optional ``filename,label`` header). ``label`` is an integer class
  index, or a class name / WordNet id known to the model's class list. Blank lines and lines
  starting with ``#`` are ignored.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from ..helpers.errors import BadInput

if TYPE_CHECKING:
    from ..artifact.manifest import ModelRecord

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")
LABEL_FILE_NAMES = ("labels.txt", "labels.csv")
IMAGENET_CLASSES = 1000
SYNSET = re.compile(r"n\d{8}")
MAPPING_SYNSETS = "ImageNet-1k synset indices (timm imagenet_synsets.txt)"
MAPPING_SORTED = "sorted folder names -> 0..N-1"
MAPPING_FILE = "labels file"
# PIL opens images up to this many pixels (its own default, 89 Mpx); past it we refuse in one line.
MAX_IMAGE_PIXELS = 89_478_485


# --------------------------------------------------------------------------------------------
# Preprocessing


def normalize_data_config(data_config: Mapping[str, Any]) -> dict[str, Any]:
    """A data config as timm expects it (JSON turns tuples into lists; fill timm's defaults)."""
    try:
        cfg = {
            "input_size": tuple(int(v) for v in data_config["input_size"]),
            "interpolation": str(data_config.get("interpolation", "bicubic")),
            "mean": tuple(float(v) for v in data_config.get("mean", (0.485, 0.456, 0.406))),
            "std": tuple(float(v) for v in data_config.get("std", (0.229, 0.224, 0.225))),
            "crop_pct": float(data_config.get("crop_pct", 0.875)),
            "crop_mode": str(data_config.get("crop_mode", "center")),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"the manifest's data_config is incomplete or malformed ({exc})") from None
    if len(cfg["input_size"]) != 3:
        raise BadInput(f"data_config input_size must be (C, H, W), got {list(cfg['input_size'])}")
    return cfg


def make_transform(data_config: Mapping[str, Any]):
    """timm's evaluation transform (resize, centre crop, to tensor, normalise) for a config."""
    cfg = normalize_data_config(data_config)
    return _cached_transform(tuple(sorted(cfg.items())))


@functools.lru_cache(maxsize=8)
def _cached_transform(items: tuple[tuple[str, Any], ...]):
    from timm.data import create_transform

    return create_transform(**dict(items), is_training=False)


def load_image(path: str | Path):
    """Open an image file as 8-bit RGB; every way it can fail is one BadInput line naming the file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInput(f"image {path} not found")
    if path.is_dir():
        raise BadInput(f"{path} is a directory, not an image (pass the files, or a folder where a folder is accepted)")
    return decode_image(path, str(path))


def decode_image(source: Any, name: str, *, formats: Sequence[str] | None = None):
    """Decode an image (a path or a binary file object) as 8-bit RGB, with every check ``predict`` makes:
    PIL's decompression-bomb limit (refused before decoding), truncated or corrupt data, and the modes
    ``to_rgb8`` converts. ``formats`` limits the decoders PIL may try (e.g. ``("JPEG", "PNG", "WEBP")``).
    Every failure is one BadInput line naming ``name``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it; a bomb is refused either way, before decoding.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=list(formats) if formats else None) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError(f"{img.width}×{img.height}")
                img.load()  # decode now: truncated files fail here, not later inside the transform
                return to_rgb8(img, name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput(f"{name} is too large to decode safely (more than {MAX_IMAGE_PIXELS:,} pixels, PIL's "
                       "decompression-bomb limit); resize it first") from None
    except UnidentifiedImageError:
        kinds = "PNG, JPEG, ..." if not formats else ", ".join("WebP" if f == "WEBP" else f for f in formats)
        raise BadInput(f"{name} is not an image PIL can read ({kinds})") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated / corrupt data, unreadable file
        reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"cannot read image {name}: {reason}") from None


def to_rgb8(img: Any, path: Path | str = "image") -> Any:
    """Any image mode PIL reads, as 8-bit RGB with its full range kept.

    ``convert("RGB")`` clips 16-bit and 32-bit modes (I;16, I, F) at 255, so a 16-bit PNG would look
    nearly white: those are scaled by their bit depth (16-bit PNGs by 65535; other I/F data by the
    range its values lie in: [0, 1], [0, 255], [0, 65535], else its own min..max). Transparency (RGBA, LA, PA, P with a transparent index) is composited on white, as a
    viewer shows it; CMYK, YCbCr, LAB, HSV, 1, L and P convert through PIL's own colour conversions.
    Anything else (multi-band scientific formats) is refused in one line.
    """
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        data = np.nan_to_num(np.asarray(img).astype(np.float64))
        lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        sixteen_bit = mode.startswith("I;16") or (mode == "I" and getattr(img, "format", None) == "PNG")
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            full = 1.0  # a float image in [0, 1]
        elif sixteen_bit or (lo >= 0.0 and 255.0 < hi <= 65535.0):
            full = 65535.0
        elif lo >= 0.0 and hi <= 255.0:
            full = 255.0  # 8-bit values held in a wider mode
        else:  # wider than 16 bits or negative: its own range
            data, full = data - lo, max(hi - lo, 1.0)
        eight = np.clip(np.rint(data * (255.0 / full)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(eight[..., None], 3, axis=2), "RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return img.convert("RGB")
    raise BadInput(f"{path} has image mode {mode}, which dvit cannot convert to RGB; save it as an 8/16-bit "
                   "PNG or a JPEG")


def preprocess_images(paths: Sequence[str | Path], data_config: Mapping[str, Any]) -> np.ndarray:
    """Load and preprocess image files into one (N, 3, H, W) float32 batch."""
    if not paths:
        raise BadInput("no images given")
    return np.ascontiguousarray(np.stack([model_input(load_image(p), data_config) for p in paths]))


def model_input(image: Any, data_config: Mapping[str, Any]) -> np.ndarray:
    """One decoded 8-bit RGB image (``load_image`` / ``decode_image``) as the (3, H, W) float32 the model takes."""
    return np.asarray(make_transform(data_config)(image), dtype=np.float32)


def denormalize(images: np.ndarray, data_config: Mapping[str, Any]) -> np.ndarray:
    """Preprocessed (N, 3, H, W) batch -> displayable (N, H, W, 3) floats in [0, 1]."""
    cfg = normalize_data_config(data_config)
    mean = np.asarray(cfg["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg["std"], np.float32).reshape(1, -1, 1, 1)
    return np.clip(images * std + mean, 0.0, 1.0).transpose(0, 2, 3, 1)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Image files in a folder (by suffix), sorted by path; BadInput when there are none."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise BadInput(f"folder {folder} not found")
    if not folder.is_dir():
        raise BadInput(f"{folder} is not a folder")
    found = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if is_image_file(p))
    if not found:
        raise BadInput(f"no image files ({', '.join(IMAGE_SUFFIXES[:4])}, ...) in {folder}")
    return found


def expand_image_args(items: Sequence[str | Path]) -> list[Path]:
    """Command-line image arguments: files as given, folders expanded to their images."""
    paths: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        paths.extend(list_images(path) if path.is_dir() else [path])
    return paths


# --------------------------------------------------------------------------------------------
# Class names


def class_names(num_classes: int) -> list[str]:
    """Readable class names: ImageNet's (shipped with timm) for 1000 classes, else 'class N'."""
    if num_classes == IMAGENET_CLASSES:
        names = _imagenet_names()
        if names:
            return names
    return [f"class {i}" for i in range(num_classes)]


@functools.lru_cache(maxsize=1)
def _imagenet_names() -> list[str] | None:
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i).split(",")[0].strip() for i in range(IMAGENET_CLASSES)]
    except Exception:  # an older/odd timm without the class files: fall back to indices
        return None


@functools.lru_cache(maxsize=1)
def _imagenet_synsets() -> list[str] | None:
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_label_name(i) for i in range(IMAGENET_CLASSES)]
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# Labelled datasets


@dataclass
class LabelledImages:
    root: Path
    layout: str  # "class folders" or "labels file"
    paths: list[Path]
    labels: np.ndarray  # int64 class index per image
    class_names: list[str] = field(default_factory=list)  # names of the folder classes (folder layout)
    labels_file: Path | None = None
    mapping: str = MAPPING_SORTED  # how folder names became class indices (MAPPING_*)

    def __len__(self) -> int:
        return len(self.paths)

    def limit(self, count: int | None) -> "LabelledImages":
        if count is None or count >= len(self.paths):
            return self
        return LabelledImages(self.root, self.layout, self.paths[:count], self.labels[:count], self.class_names,
                              self.labels_file, self.mapping)

    def batches(self, batch: int, data_config: Mapping[str, Any]) -> Iterator[tuple[np.ndarray, np.ndarray, list[Path]]]:
        for start in range(0, len(self.paths), batch):
            chunk = self.paths[start:start + batch]
            yield preprocess_images(chunk, data_config), self.labels[start:start + batch], chunk

    def describe(self) -> dict[str, Any]:
        return {"root": str(self.root), "layout": self.layout, "images": len(self.paths),
                "classes": len(set(self.labels.tolist())),
                "labels_file": None if self.labels_file is None else str(self.labels_file),
                "label_mapping": self.mapping}


def read_dataset(root: str | Path, *, labels_file: str | Path | None = None,
                 num_classes: int | None = None) -> LabelledImages:
    """A labelled image set: class sub-folders, or a flat folder plus a labels file."""
    root = Path(root).expanduser()
    if not root.exists():
        raise BadInput(f"data folder {root} not found")
    if not root.is_dir():
        raise BadInput(f"--data must be a folder, got the file {root}")
    if labels_file is None:
        labels_file = next((root / n for n in LABEL_FILE_NAMES if (root / n).is_file()), None)
    if labels_file is not None:
        data = _read_labels_file(root, Path(labels_file).expanduser(), num_classes)
    else:
        data = _read_class_folders(root, num_classes)
    if num_classes is not None and len(data.labels) and int(data.labels.max()) >= num_classes:
        worst = int(data.labels.max())
        if data.layout == "class folders":
            raise BadInput(f"{root} has {len(data.class_names)} class folders but the model has {num_classes} classes")
        raise BadInput(f"label {worst} in {data.labels_file} is out of range: the model has {num_classes} classes")
    return data


def _read_class_folders(root: Path, num_classes: int | None = None) -> LabelledImages:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = [p for p in root.iterdir() if is_image_file(p)]
        if loose:
            raise BadInput(f"{root} holds images but no class sub-folders and no labels file "
                           f"({' or '.join(LABEL_FILE_NAMES)}); pass --labels FILE")
        raise BadInput(f"no class sub-folders or images in {root}")
    indices, mapping = _folder_indices(root, classes, num_classes)
    paths, labels = [], []
    for name in classes:
        images = sorted(p for p in (root / name).rglob("*") if is_image_file(p))
        paths.extend(images)
        labels.extend([indices[name]] * len(images))
    if not paths:
        raise BadInput(f"the class folders of {root} contain no image files")
    return LabelledImages(root, "class folders", paths, np.asarray(labels, np.int64), classes, mapping=mapping)


def _folder_indices(root: Path, classes: list[str], num_classes: int | None) -> tuple[dict[str, int], str]:
    """Class index per folder: ImageNet-1k's for synset folders of a 1000-class model, else sorted order."""
    synset_named = [c for c in classes if SYNSET.fullmatch(c)]
    if num_classes == IMAGENET_CLASSES and synset_named:
        table = {wnid: i for i, wnid in enumerate(_imagenet_synsets() or [])}
        if not table:
            raise BadInput(f"the class folders of {root} are ImageNet synsets, but timm's ImageNet synset table "
                           "(timm.data.ImageNetInfo) is not available to map them; pass --labels FILE")
        unknown = [c for c in classes if c not in table]
        if unknown:
            raise BadInput(f"the class folders of {root} mix ImageNet-1k synsets ({synset_named[0]}) with other names "
                           f"({unknown[0]}): their indices would be ambiguous; rename them or pass --labels FILE")
        return {c: table[c] for c in classes}, MAPPING_SYNSETS
    return {c: i for i, c in enumerate(classes)}, MAPPING_SORTED


def _read_labels_file(root: Path, labels_file: Path, num_classes: int | None) -> LabelledImages:
    if not labels_file.is_file():
        raise BadInput(f"labels file {labels_file} not found")
    try:
        text = labels_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read labels file {labels_file}: {exc}") from None
    lookup = _label_lookup(num_classes)
    paths, labels = [], []
    for lineno, fields in _label_rows(text, labels_file):
        if len(fields) != 2:
            raise BadInput(f"{labels_file}:{lineno}: expected 'filename label', got {len(fields)} field(s)")
        name, label = fields[0].strip(), fields[1].strip()
        path = (root / name) if not Path(name).is_absolute() else Path(name)
        if not path.is_file():
            raise BadInput(f"{labels_file}:{lineno}: image {path} not found")
        paths.append(path)
        labels.append(_parse_label(label, lookup, labels_file, lineno))
    if not paths:
        raise BadInput(f"labels file {labels_file} lists no images")
    return LabelledImages(root, "labels file", paths, np.asarray(labels, np.int64), [], labels_file,
                          mapping=MAPPING_FILE)


def _label_rows(text: str, labels_file: Path) -> Iterator[tuple[int, list[str]]]:
    first = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    is_csv = labels_file.suffix.lower() == ".csv" or "," in first
    lines = text.splitlines()
    if is_csv:
        rows = csv.reader(io.StringIO(text))
        for lineno, row in enumerate(rows, start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if lineno == 1 and [c.strip().lower() for c in row[:2]] == ["filename", "label"]:
                continue  # header
            yield lineno, row
    else:
        for lineno, line in enumerate(lines, start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            # File names may contain spaces: the label is the last field.
            yield lineno, stripped.rsplit(None, 1)


def _label_lookup(num_classes: int | None) -> dict[str, int]:
    """Names a labels file may use instead of indices (ImageNet synsets and names for 1000 classes)."""
    lookup: dict[str, int] = {}
    if num_classes == IMAGENET_CLASSES:
        for i, wnid in enumerate(_imagenet_synsets() or []):
            lookup[wnid.lower()] = i
        for i, name in enumerate(_imagenet_names() or []):
            lookup.setdefault(name.lower(), i)
    return lookup


def _parse_label(label: str, lookup: dict[str, int], labels_file: Path, lineno: int) -> int:
    try:
        value = int(label)
    except ValueError:
        value = lookup.get(label.lower(), -1)
        if value < 0:
            raise BadInput(f"{labels_file}:{lineno}: label '{label}' is neither a class index nor a known class name") from None
    if value < 0:
        raise BadInput(f"{labels_file}:{lineno}: label {value} is negative")
    return value


def data_config_of(model: "ModelRecord") -> dict[str, Any]:
    """The preprocessing an artifact's model expects: its recorded data_config, else its variant's."""
    if model.data_config is not None:
        return dict(model.data_config)
    if model.config:
        from ..models.config import VariantConfig

        return VariantConfig.from_dict(dict(model.config)).data_config()
    raise BadInput("the artifact's manifest records no data_config or model config: cannot preprocess images for it")


def seeded_inputs(model: "ModelRecord", count: int, seed: int) -> np.ndarray:
    """``count`` standard-normal images of the model's input shape (what normalised photos look like)."""
    return np.random.default_rng(seed).standard_normal((count, *model.input_shape), dtype=np.float32)
