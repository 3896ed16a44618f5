"""Image preprocessing (timm data config), image folders and labelled datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dvit_deploy.jobs.data import (class_names, denormalize, list_images, make_transform, preprocess_images,
                              read_dataset)
from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.models.config import VARIANTS

DATA_CONFIG = VARIANTS["deit-s"].data_config()


def write_image(path, size=(320, 240), colour=(200, 30, 40), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new(mode, size, colour if mode == "RGB" else colour[0])
    img.save(path)
    return path


def test_preprocess_matches_timm_transform_and_survives_json(tmp_path):
    png = write_image(tmp_path / "a.png")
    jpg = write_image(tmp_path / "b.jpg", size=(100, 180), colour=(90,), mode="L")  # grayscale JPEG
    batch = preprocess_images([png, jpg], DATA_CONFIG)
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32
    expected = make_transform(DATA_CONFIG)(Image.open(png).convert("RGB")).numpy()
    np.testing.assert_allclose(batch[0], expected)
    # A solid red picture normalises to ((200/255 - mean) / std) in the red channel.
    assert batch[0, 0].mean() == pytest.approx((200 / 255 - 0.485) / 0.229, abs=1e-3)
    # The manifest stores the config as JSON (tuples become lists): same result.
    again = preprocess_images([png], json.loads(json.dumps(DATA_CONFIG)))
    np.testing.assert_array_equal(again[0], batch[0])
    shown = denormalize(batch, DATA_CONFIG)
    assert shown.shape == (2, 224, 224, 3)
    assert shown[0, 100, 100] == pytest.approx([200 / 255, 30 / 255, 40 / 255], abs=2e-3)


def test_bad_image_files_are_one_line_errors(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    good = write_image(tmp_path / "ok.jpg")
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:120])
    for name, message in [("text.png", "not an image"), ("cut.jpg", "cannot read image"),
                          ("missing.png", "not found")]:
        with pytest.raises(BadInput, match=message) as info:
            preprocess_images([tmp_path / name], DATA_CONFIG)
        assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BadInput, match="is a directory"):
        preprocess_images([tmp_path], DATA_CONFIG)


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ("b.png", "a.JPG", "c.jpeg"):
        write_image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.jpeg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no image files"):
        list_images(tmp_path / "empty")


def test_class_names_imagenet_from_timm_and_fallback():
    names = class_names(1000)
    assert names[0] == "tench" and names[1] == "goldfish" and len(names) == 1000
    assert class_names(10) == [f"class {i}" for i in range(10)]


def test_class_folders_follow_sorted_names(tmp_path):
    for cls, count in (("zebra", 2), ("ant", 3), ("mole", 1)):
        for i in range(count):
            write_image(tmp_path / cls / f"{i}.png")
    data = read_dataset(tmp_path, num_classes=10)
    assert data.layout == "class folders" and data.class_names == ["ant", "mole", "zebra"]
    assert data.labels.tolist() == [0, 0, 0, 1, 2, 2]
    assert len(data.limit(4)) == 4
    with pytest.raises(BadInput, match="3 class folders but the model has 2 classes"):
        read_dataset(tmp_path, num_classes=2)


@pytest.mark.parametrize("fmt", ["txt", "csv"])
def test_flat_folder_with_labels_file(tmp_path, fmt):
    for name in ("x 1.png", "y.png", "z.png"):
        write_image(tmp_path / name)
    if fmt == "txt":
        (tmp_path / "labels.txt").write_text("# file label\nx 1.png 3\n\ny.png 0\nz.png 7\n")
    else:
        (tmp_path / "labels.csv").write_text("filename,label\nx 1.png,3\ny.png,0\nz.png,7\n")
    data = read_dataset(tmp_path, num_classes=10)
    assert data.layout == "labels file"
    assert [p.name for p in data.paths] == ["x 1.png", "y.png", "z.png"]
    assert data.labels.tolist() == [3, 0, 7]


def test_labels_file_names_and_errors(tmp_path):
    write_image(tmp_path / "fish.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("fish.png n01440764\n")  # ImageNet synset id -> index 0
    assert read_dataset(tmp_path, num_classes=1000).labels.tolist() == [0]
    labels.write_text("fish.png goldfish\n")
    assert read_dataset(tmp_path, num_classes=1000).labels.tolist() == [1]
    labels.write_text("fish.png 12\n")
    with pytest.raises(BadInput, match="label 12 .* out of range"):
        read_dataset(tmp_path, num_classes=10)
    labels.write_text("gone.png 1\n")
    with pytest.raises(BadInput, match=r"labels.txt:1: image .*gone.png not found"):
        read_dataset(tmp_path, num_classes=10)
    labels.write_text("fish.png not-a-class\n")
    with pytest.raises(BadInput, match="neither a class index nor a known class name"):
        read_dataset(tmp_path, num_classes=10)
    labels.unlink()
    with pytest.raises(BadInput, match="no class sub-folders and no labels file"):
        read_dataset(tmp_path)


def test_whitespace_labels_file_with_a_comma_in_its_comment(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    # A leading comment must not make the file look like CSV.
    (tmp_path / "labels.txt").write_text("# file, label\na.png 4\nb.png 2\n")
    assert read_dataset(tmp_path).labels.tolist() == [4, 2]


def test_imagenet_synset_folders_get_imagenet_indices(tmp_path):
    """A subset of ImageNet's val folders keeps ImageNet's indices (10, 15), not 0, 1 (issue 14)."""
    for wnid in ("n01558993", "n01530575"):
        write_image(tmp_path / wnid / "a.png")
    data = read_dataset(tmp_path, num_classes=1000)
    assert data.labels.tolist() == [10, 15]
    assert data.mapping.startswith("ImageNet-1k synset") and data.describe()["label_mapping"] == data.mapping
    assert data.limit(1).mapping == data.mapping
    # A model with other classes: folder order, and it says so.
    other = read_dataset(tmp_path, num_classes=10)
    assert other.labels.tolist() == [0, 1] and other.mapping.startswith("sorted folder names")
    # Synsets mixed with other names: ambiguous, refused.
    write_image(tmp_path / "cats" / "a.png")
    with pytest.raises(BadInput, match="mix ImageNet-1k synsets"):
        read_dataset(tmp_path, num_classes=1000)


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "L", "LA", "P", "RGBA", "CMYK", "1", "YCbCr"])
def test_every_image_mode_keeps_its_brightness(tmp_path, mode):
    """A 16-bit PNG is not read as white (convert("RGB") clips it at 255); every mode lands on 8-bit RGB."""
    from dvit_deploy.jobs.data import load_image, to_rgb8

    if mode == "I;16":  # a real 16-bit PNG file at ~46 % grey
        Image.fromarray(np.full((6, 6), 30000, np.uint16)).save(tmp_path / "g16.png")
        assert Image.open(tmp_path / "g16.png").mode == "I;16"
        rgb = load_image(tmp_path / "g16.png")
        expected = round(30000 / 65535 * 255)
    else:
        # a bilevel image holds black or white only; 204 is a colour of the web palette ("P"), not dithered
        expected = {"1": 255, "P": 204}.get(mode, 200)
        rgb = to_rgb8(Image.new("RGB", (6, 6), (expected,) * 3).convert(mode))
    pixels = np.asarray(rgb)
    assert rgb.mode == "RGB" and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - expected).max() <= 2, (mode, pixels[0, 0])


def test_transparent_palette_image_is_composited_on_white(tmp_path):
    from dvit_deploy.jobs.data import load_image

    Image.fromarray(np.zeros((4, 4), np.uint8)).convert("P").save(tmp_path / "t.png", transparency=0)
    assert np.asarray(load_image(tmp_path / "t.png")).min() == 255
