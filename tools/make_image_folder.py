"""Writes N PNG images per class from a Fashion-MNIST IDX file into
OUT/<class>/<index>.png, for the walk-through's image-folder upload and the
benchmarks: the first N images of each class in file order.

Usage: make_image_folder.py FASHION_DIR OUT_DIR PER_CLASS
                            [--split=t10k|train] [--classes=5,6,7,8,9]
  --split    which Fashion-MNIST file (default t10k: the 10,000 test images)
  --classes  only these labels (default all ten); class folders keep their
             Fashion-MNIST names
"""
import argparse
import gzip
import os

from PIL import Image

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
           "sneaker", "bag", "ankle-boot"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("fashion_dir")
    p.add_argument("out_dir")
    p.add_argument("per_class", type=int)
    p.add_argument("--split", choices=["t10k", "train"], default="t10k")
    p.add_argument("--classes", default=",".join(str(c) for c in range(10)))
    a = p.parse_args()
    try:
        wanted = sorted({int(c) for c in a.classes.split(",")})
    except ValueError:
        p.error(f"--classes takes labels 0..9, comma-separated, not '{a.classes}'")
    if not wanted or any(c < 0 or c > 9 for c in wanted):
        p.error("--classes takes labels 0..9")
    with gzip.open(os.path.join(a.fashion_dir, f"{a.split}-images-idx3-ubyte.gz")) as f:
        images = f.read()[16:]
    with gzip.open(os.path.join(a.fashion_dir, f"{a.split}-labels-idx1-ubyte.gz")) as f:
        labels = f.read()[8:]
    written = {c: 0 for c in wanted}
    for i, label in enumerate(labels):
        if label not in written or written[label] >= a.per_class:
            continue
        folder = os.path.join(a.out_dir, CLASSES[label])
        os.makedirs(folder, exist_ok=True)
        Image.frombytes("L", (28, 28), images[i * 784:(i + 1) * 784]).save(
            os.path.join(folder, f"{i:05d}.png"))
        written[label] += 1
        if all(v >= a.per_class for v in written.values()):
            break
    print(f"wrote {sum(written.values())} images to {a.out_dir}")


if __name__ == "__main__":
    main()
