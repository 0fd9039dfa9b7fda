"""Writes the walk-through's Fashion-MNIST subsets as IDX pairs (relabelled 0..4):

  base-*  PER_CLASS training images of each of classes 0-4 (pretraining)
  few-*   FEW_PER_CLASS (20) training images of each of classes 5-9 (few-shot fine-tuning)
  test-*  TEST_PER_CLASS test images of each of classes 5-9 (all 1,000 by default; accuracy)
  new-*   NEW_PER_CLASS (100) training images of each of classes 5-9 (an increment)
  oldtest-*  TEST_PER_CLASS test images of each of classes 0-4 (relabelled 0..4)
  alltest-*  TEST_PER_CLASS test images of each of classes 0-9 (labels 0..9)

Usage: make_fashion_subsets.py FASHION_DIR OUT_DIR PER_CLASS [TEST_PER_CLASS [FEW_PER_CLASS
       [NEW_PER_CLASS]]]

The benchmark runners import load() and write() for their own subsets.
"""
import gzip
import random
import struct
import sys


def load(src, which):
    """The images (784 bytes each, row-major) and labels of a split: "train" or "t10k"."""
    with gzip.open(f"{src}/{which}-images-idx3-ubyte.gz") as f:
        images = f.read()[16:]
    with gzip.open(f"{src}/{which}-labels-idx1-ubyte.gz") as f:
        labels = f.read()[8:]
    return images, labels


def _write_idx(out, name, images, labels, indices, classes):
    """Writes the images at INDICES (in that order) as OUT/NAME-images and OUT/NAME-labels,
    labelled by their index in CLASSES; returns how many."""
    pixels, kept = bytearray(), bytearray()
    for i in indices:
        pixels += images[i * 784:(i + 1) * 784]
        kept.append(classes.index(labels[i]))
    with open(f"{out}/{name}-images", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, len(kept), 28, 28) + pixels)
    with open(f"{out}/{name}-labels", "wb") as f:
        f.write(struct.pack(">II", 0x801, len(kept)) + kept)
    return len(kept)


def write(out, name, images, labels, classes, per_class=None):
    """Writes OUT/NAME-images and OUT/NAME-labels: the first PER_CLASS (all when None) images of
    each of CLASSES, labelled by their index in CLASSES; returns how many."""
    indices, taken = [], {c: 0 for c in classes}
    for i, label in enumerate(labels):
        if label in taken and (per_class is None or taken[label] < per_class):
            indices.append(i)
            taken[label] += 1
    return _write_idx(out, name, images, labels, indices, classes)


def write_drawn(out, name, images, labels, classes, per_class, seed):
    """Like write(), but PER_CLASS images of each class drawn at random by SEED: each class's
    images are shuffled once by SEED and the first PER_CLASS taken, so for one seed the sets
    are nested (the 5 images per class hold the 1, and so on); kept in file order."""
    chosen = []
    for c in classes:
        pool = [i for i, label in enumerate(labels) if label == c]
        random.Random(seed * 1000 + c).shuffle(pool)
        chosen += pool[:per_class]
    return _write_idx(out, name, images, labels, sorted(chosen), classes)


def main():
    src, out, per_class = sys.argv[1], sys.argv[2], int(sys.argv[3])
    test_per_class = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else None
    few_per_class = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    new_per_class = int(sys.argv[6]) if len(sys.argv) > 6 else 100
    train, train_labels = load(src, "train")
    test, test_labels = load(src, "t10k")
    write(out, "base", train, train_labels, [0, 1, 2, 3, 4], per_class)
    write(out, "few", train, train_labels, [5, 6, 7, 8, 9], few_per_class)
    write(out, "test", test, test_labels, [5, 6, 7, 8, 9], test_per_class)
    write(out, "new", train, train_labels, [5, 6, 7, 8, 9], new_per_class)
    write(out, "oldtest", test, test_labels, [0, 1, 2, 3, 4], test_per_class)
    write(out, "alltest", test, test_labels, list(range(10)), test_per_class)


if __name__ == "__main__":
    main()
