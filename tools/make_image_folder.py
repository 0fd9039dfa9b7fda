"""Writes N PNG images per class from a Fashion-MNIST IDX file into
OUT/<class>/<index>.png, for the walk-through's image-folder upload.

Usage: make_image_folder.py FASHION_DIR OUT_DIR PER_CLASS
"""
import gzip
import os
import sys

from PIL import Image

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
           "sneaker", "bag", "ankle-boot"]


def main():
    src, out, per_class = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with gzip.open(os.path.join(src, "t10k-images-idx3-ubyte.gz")) as f:
        images = f.read()[16:]
    with gzip.open(os.path.join(src, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = f.read()[8:]
    written = {c: 0 for c in range(10)}
    for i, label in enumerate(labels):
        if written[label] >= per_class:
            continue
        folder = os.path.join(out, CLASSES[label])
        os.makedirs(folder, exist_ok=True)
        Image.frombytes("L", (28, 28), images[i * 784:(i + 1) * 784]).save(
            os.path.join(folder, f"{i:05d}.png"))
        written[label] += 1
        if all(v >= per_class for v in written.values()):
            break
    print(f"wrote {sum(written.values())} images to {out}")


if __name__ == "__main__":
    main()
