"""Builds the image-folder fixture and its reference preprocessing (run once; needs numpy and
Pillow): synthetic photos of assorted sizes as JPEG and PNG in class folders, and the pixels the
official evaluate_bpd.py would feed the model for img_size 16, as uint8 (N, 3, 16, 16).

The reference follows evaluate_bpd.py's pipeline: torchvision ImageFolder (classes = sorted
subfolders, files in sorted(os.walk) order, PIL open + convert("RGB")), Resize(16), CenterCrop(16).
For PIL images torchvision's Resize calls PIL's Image.resize(BILINEAR) on the size from
_compute_resized_output_size (shorter side to 16, longer int(16 * long / short)), and CenterCrop
crops at int(round((dim - 16) / 2)); both formulas are restated below (torchvision itself needs
torch, which this machine does not have).
"""
import os

import numpy as np
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.join(here, "photos")
size = 16


def photo(w, h, seed, gray=False):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(1 if gray else 3):
        f = rng.uniform(0.05, 0.3, 2)
        v = 128 + 70 * np.sin(x * f[0] + c) * np.cos(y * f[1] - c) + 40 * (x / w - y / h) + rng.normal(0, 12, (h, w))
        chans.append(np.clip(v, 0, 255).astype(np.uint8))
    return Image.fromarray(chans[0] if gray else np.stack(chans, -1))


def build():
    files = {
        "cat/a.jpg": (40, 30, False), "cat/b.png": (23, 57, False), "cat/deep/c.jpeg": (64, 64, False),
        "cat/gray.jpg": (33, 21, True), "dog/x.JPG": (16, 16, False), "dog/y.jpg": (100, 37, False),
        "dog/z.png": (19, 18, False), "dog/sub/w.jpg": (27, 45, True),
    }
    for i, (rel, (w, h, gray)) in enumerate(sorted(files.items())):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        img = photo(w, h, i, gray)
        if rel.endswith(".png"):
            img.save(path)
        else:
            img.save(path, "JPEG", quality=90)
    with open(os.path.join(root, "dog", "notes.txt"), "w") as f:
        f.write("not an image: skipped\n")


def reference():
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    exts = (".png", ".jpg", ".jpeg")
    images, labels, names = [], [], []
    for label, c in enumerate(classes):
        for dirpath, _, fnames in sorted(os.walk(os.path.join(root, c))):
            for fn in sorted(fnames):
                if not fn.lower().endswith(exts):
                    continue
                img = Image.open(os.path.join(dirpath, fn)).convert("RGB")
                w, h = img.size
                short, long = (w, h) if w <= h else (h, w)
                new_short, new_long = size, int(size * long / short)
                nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
                if (nw, nh) != (w, h):
                    img = img.resize((nw, nh), Image.BILINEAR)
                top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
                img = img.crop((left, top, left + size, top + size))
                images.append(np.asarray(img).transpose(2, 0, 1))
                labels.append(label)
                names.append(os.path.relpath(os.path.join(dirpath, fn), root))
    np.save(os.path.join(here, "reference-16.npy"), np.stack(images).astype(np.uint8))
    np.save(os.path.join(here, "reference-labels.npy"), np.array(labels, dtype=np.int64))
    with open(os.path.join(here, "reference-files.txt"), "w") as f:
        f.write("\n".join(names) + "\n")


if __name__ == "__main__":
    build()
    reference()
