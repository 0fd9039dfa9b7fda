#!/usr/bin/python3
"""PyTorch's input pipeline feeding the same training as a Kaizen job, the
baseline of bench/loader/folder_train_bench.sh.

torchvision.datasets.ImageFolder (PIL decode) with transforms (Resize to the
model's input, ToTensor, Normalize with ImageNet's mean/std), a DataLoader
(batch_size, shuffle=True, num_workers=--workers), and one epoch of Adam
(lr 1e-3) on the TorchScript `--model` (torchvision resnet18) with a new
linear head for the folder's classes:
  fine_tune            layer4 and the head train (Kaizen's FINE_TUNE with
                       trainable_blocks=1); the rest is frozen in eval mode
  feature_extraction   only the head trains; the backbone runs in eval mode
                       under no_grad (no feature cache: the textbook loop)
  loader_only          no model: the input pipeline alone, batches drawn and
                       dropped (to set beside Kaizen's loader_bench)

Prints one JSON line: images, seconds (the epoch, first batch included),
images_per_s, and the peak RSS in MB of the main process and of the largest
worker (ru_maxrss of RUSAGE_SELF and RUSAGE_CHILDREN), with their total for
`workers` workers (an upper bound: workers share pages with the parent).
Also the proportional set size (PSS, /proc/PID/smaps_rollup: a page shared
by n processes counts 1/n in each) of the process and its workers together,
sampled every 50 ms: just before the epoch starts (torch imported, the
dataset indexed and, for the training strategies, the model loaded) and at
its peak during the epoch; their difference is the memory the epoch's input
pipeline (and training) added, workers included and shared pages counted
once.

Run it with /usr/bin/python3 (Debian's torch and torchvision).
"""

import argparse
import json
import os
import resource
import threading
import time

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--folder", required=True)
    p.add_argument("--strategy", choices=["fine_tune", "feature_extraction", "loader_only"],
                   required=True)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    tf = transforms.Compose([
        transforms.Resize((a.size, a.size)),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    data = torchvision.datasets.ImageFolder(a.folder, transform=tf)
    loader = DataLoader(data, batch_size=a.batch_size, shuffle=True, num_workers=a.workers,
                        persistent_workers=False)
    if a.strategy == "loader_only":
        pss = PssSampler()
        images = 0
        start = time.perf_counter()
        for x, _ in loader:
            images += x.shape[0]
        report(a, images, time.perf_counter() - start, pss)
        return
    model = torch.jit.load(a.model)
    in_features = model.fc.weight.shape[1]
    head = torch.nn.Linear(in_features, len(data.classes))
    for prm in model.parameters():
        prm.requires_grad_(False)
    model.eval()
    trainable = list(head.parameters())
    if a.strategy == "fine_tune":
        for prm in model.layer4.parameters():
            prm.requires_grad_(True)
        model.layer4.train()
        trainable += list(model.layer4.parameters())
    opt = torch.optim.Adam(trainable, lr=1e-3)

    def features(x):
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        x = model.layer3(model.layer2(model.layer1(x)))
        x = model.layer4(x)
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)

    pss = PssSampler()
    images = 0
    start = time.perf_counter()
    for x, y in loader:
        if a.strategy == "feature_extraction":
            with torch.no_grad():
                f = features(x)
        else:
            with torch.no_grad():
                x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
                x = model.layer3(model.layer2(model.layer1(x)))
            f = torch.flatten(
                torch.nn.functional.adaptive_avg_pool2d(model.layer4(x), 1), 1)
        loss = torch.nn.functional.cross_entropy(head(f), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        images += x.shape[0]
    report(a, images, time.perf_counter() - start, pss)


def pss_kb(pid):
    """The PSS of one process in kB, 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    """The processes `pid` started (the DataLoader's workers), over all its threads."""
    out = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.update(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


class PssSampler:
    """This process's PSS and its workers' together: now (the baseline) and
    the largest sum seen every 50 ms from now until stop()."""

    def __init__(self):
        self.baseline_kb = self.total_kb()
        self.peak_kb = self.baseline_kb
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def total_kb():
        me = os.getpid()
        return pss_kb(me) + sum(pss_kb(c) for c in children(me))

    def _run(self):
        while not self._done.wait(0.05):
            self.peak_kb = max(self.peak_kb, self.total_kb())

    def stop(self):
        self._done.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, self.total_kb())


def report(a, images, seconds, pss):
    pss.stop()
    main_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({
        "what": "pytorch", "strategy": a.strategy, "workers": a.workers, "images": images,
        "seconds": seconds, "images_per_s": images / seconds, "main_rss_mb": main_mb,
        "worker_rss_mb": child_mb if a.workers else 0,
        "total_rss_mb": main_mb + (a.workers * child_mb if a.workers else 0),
        "pss_baseline_mb": pss.baseline_kb / 1024, "pss_peak_mb": pss.peak_kb / 1024,
        "pss_growth_mb": (pss.peak_kb - pss.baseline_kb) / 1024}))


if __name__ == "__main__":
    main()
