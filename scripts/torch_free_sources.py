#!/usr/bin/env python3
"""Prints, one per line, those of the given source files that include no
LibTorch header, directly or through the repository's own headers. CMake
compiles them without the precompiled LibTorch header: forcing that 600 MB
header into a file that does not need it costs the file about 7 s.

Usage: torch_free_sources.py REPO_ROOT FILE...
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
TORCH = ("torch/", "ATen/", "c10/", "caffe2/")


def main():
    root = sys.argv[1]
    memo = {}

    def uses_torch(path, stack=()):
        if path in memo:
            return memo[path]
        if path in stack:
            return False
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            return False
        found = False
        for kind, name in INCLUDE.findall(text):
            if name.startswith(TORCH):
                found = True
                break
            candidate = os.path.join(root, name)
            if kind == '"' and os.path.isfile(candidate) and uses_torch(candidate, stack + (path,)):
                found = True
                break
        memo[path] = found
        return found

    for f in sys.argv[2:]:
        if not uses_torch(f):
            print(f)


if __name__ == "__main__":
    main()
