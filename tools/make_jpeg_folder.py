"""Writes a large image folder of JPEGs for the input-pipeline benchmarks (issue 17):
Fashion-MNIST training images upscaled to SIZE x SIZE RGB, tinted per image and given a
fixed per-image grain (Gaussian noise, seeded by the image's index) so that each JPEG
carries the detail of a photo, not of a flat upscaled thumbnail, saved at QUALITY into
OUT/<class name>/<index>.jpg. The images cycle through the 60,000 training images (the
same picture recurs past 60,000, with other tint and grain). Deterministic for its
arguments. Prints the count and the bytes written.

Usage: make_jpeg_folder.py FASHION_DIR OUT COUNT [--size 224] [--quality 98] [--grain 30]
                           [--processes 2]
"""
import argparse
import multiprocessing
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fashion_subsets import load  # noqa: E402

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot"]

_images = _labels = _args = None


def _init(src, args):
    global _images, _labels, _args
    _images, _labels = load(src, "train")
    _args = args


def _write(index):
    n = len(_labels)
    source = index % n
    rng = np.random.default_rng(index)
    grey = Image.frombytes("L", (28, 28), _images[source * 784:(source + 1) * 784])
    grey = np.asarray(grey.resize((_args.size, _args.size), Image.BILINEAR), dtype=np.float32)
    tint = rng.uniform(0.55, 1.0, size=3).astype(np.float32)
    rgb = grey[:, :, None] * tint[None, None, :] + 20.0 * (1.0 - tint[None, None, :])
    rgb += rng.normal(0.0, _args.grain, size=rgb.shape).astype(np.float32)
    pixels = np.clip(rgb, 0, 255).astype(np.uint8)
    path = os.path.join(_args.out, CLASSES[_labels[source]], f"{index:06d}.jpg")
    Image.fromarray(pixels, "RGB").save(path, quality=_args.quality)
    return os.path.getsize(path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fashion_dir")
    p.add_argument("out")
    p.add_argument("count", type=int)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--quality", type=int, default=98)
    p.add_argument("--grain", type=float, default=30.0)
    p.add_argument("--processes", type=int, default=2)
    args = p.parse_args()
    for name in CLASSES:
        os.makedirs(os.path.join(args.out, name), exist_ok=True)
    with multiprocessing.Pool(args.processes, _init, (args.fashion_dir, args)) as pool:
        total = sum(pool.imap_unordered(_write, range(args.count), chunksize=64))
    print(f"{args.count} JPEGs, {total} bytes in {args.out}")


if __name__ == "__main__":
    main()
