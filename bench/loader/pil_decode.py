#!/usr/bin/env python3
"""PIL's decode rate on an image folder: every file opened, decoded, converted to RGB and
resized (bilinear) to SIZE x SIZE uint8, as torchvision's ImageFolder + Resize would, for
EPOCHS passes with each process count. One JSON line per process count. With --max_images K,
only K files evenly spread over the sorted list (the same images as kaizen_loader_bench
--max_images K on the folder's record file, whose records are in the same order).

Usage: pil_decode.py FOLDER [--size 224] [--epochs 2] [--processes 1,2] [--max_images K]
"""
import argparse
import json
import multiprocessing
import os
import time

import numpy as np
from PIL import Image


def load(path_size):
    path, size = path_size
    with Image.open(path) as im:
        return int(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)).shape[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--processes", default="1,2")
    p.add_argument("--max_images", type=int, default=0)
    a = p.parse_args()
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(a.folder) for f in names)
    if 0 < a.max_images < len(files):
        files = [files[i * len(files) // a.max_images] for i in range(a.max_images)]
    work = [(f, a.size) for f in files]
    for n in (int(x) for x in a.processes.split(",")):
        start = time.perf_counter()
        if n == 1:
            for _ in range(a.epochs):
                for item in work:
                    load(item)
        else:
            with multiprocessing.Pool(n) as pool:
                for _ in range(a.epochs):
                    for _ in pool.imap_unordered(load, work, chunksize=32):
                        pass
        seconds = time.perf_counter() - start
        images = len(work) * a.epochs
        print(json.dumps({"what": "pil", "processes": n, "images": images,
                          "seconds": round(seconds, 3),
                          "images_per_s": round(images / seconds, 1),
                          "per_process": round(images / seconds / n, 1)}), flush=True)


if __name__ == "__main__":
    main()
