#!/usr/bin/python3
"""The textbook PyTorch transfer-learning script, the baseline of
bench/e2e/time_to_accuracy.sh.

What the tutorials and the seed scripts do, settings fixed here before any
run: torchvision.datasets.ImageFolder with transforms (Grayscale/RGB to the
model's channels, Resize to its input, ToTensor, Normalize with its mean and
std), DataLoader(batch_size=32, shuffle=True, num_workers=--workers), the
pretrained model (--model, a TorchScript file with kaizen.json; its
forward_features is the backbone) with a new nn.Linear head for the folder's
classes, Adam, cross-entropy, model.train() while training and model.eval()
while testing, --epochs epochs.
  - feature_extraction: the backbone frozen (requires_grad False), Adam on
    the head at lr 1e-3;
  - fine_tune: the top block of the backbone trainable (the last top-level
    child with parameters, as Kaizen's FINE_TUNE counts blocks), the rest
    frozen; Adam with the head at 1e-3 and the top block at 1e-4.

After every epoch the model is scored on --test_folder. That scoring is not
part of the time: the clock "t" (seconds since the process started, imports
and dataset build included) stops while it runs.

Prints JSON lines: {"event": "setup", "process_start_wall" (time.time() at
its first line), ...}, one {"event": "epoch", "epoch",
"t", "train_loss", "train_accuracy", "test_accuracy", "eval_seconds"} per
epoch, then {"event": "done", "t", "eval_seconds" (all the scoring)}.
"""

import time

T_PROCESS = time.perf_counter()  # as early as possible: imports count
T_WALL = time.time()  # the same moment on the wall clock, for the caller

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms  # noqa: E402

# The new head over the base's features, and the backbone's blocks as
# Kaizen counts them: the same as the transfer table's PyTorch loop.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "transfer"))
from pytorch_loop import Classifier, blocks  # noqa: E402

T_IMPORTED = time.perf_counter()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="pretrained TorchScript model (with kaizen.json)")
    p.add_argument("--train_folder", required=True, help="image folder: one sub-folder per class")
    p.add_argument("--test_folder", required=True, help="the same classes, scored after every epoch")
    p.add_argument("--strategy", required=True, choices=["feature_extraction", "fine_tune"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="DataLoader num_workers")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    extra = {"kaizen.json": ""}
    base = torch.jit.load(args.model, map_location="cpu", _extra_files=extra)
    meta = json.loads(extra["kaizen.json"] or "{}")
    shape = [int(x) for x in (meta.get("input_shape") or meta.get("inputShape") or [1, 28, 28])]
    norm = meta.get("normalization", {})
    head_path = (meta.get("head") or {}).get("module_path") or \
        (meta.get("head") or {}).get("modulePath") or "fc"
    channels = shape[0]
    mean = [float(x) for x in norm.get("mean", [0.0])]
    std = [float(x) for x in norm.get("std", [1.0])]
    mean = (mean * channels)[:channels] if len(mean) == 1 else mean
    std = (std * channels)[:channels] if len(std) == 1 else std

    tf = transforms.Compose([
        transforms.Grayscale(1) if channels == 1 else transforms.Lambda(lambda im: im.convert("RGB")),
        transforms.Resize((shape[1], shape[2])),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    train_set = torchvision.datasets.ImageFolder(args.train_folder, transform=tf)
    test_set = torchvision.datasets.ImageFolder(args.test_folder, transform=tf)
    if train_set.classes != test_set.classes:
        sys.exit(f"tta_pytorch.py: the test folder's classes {test_set.classes} are not the "
                 f"training folder's {train_set.classes}")
    loader = DataLoader(train_set, batch_size=32, shuffle=True, num_workers=args.workers)
    test_loader = DataLoader(test_set, batch_size=256, shuffle=False, num_workers=args.workers)

    old_head = base
    for part in head_path.split("."):
        old_head = getattr(old_head, part)
    model = Classifier(base, int(old_head.weight.shape[1]), len(train_set.classes))
    for t in base.parameters():
        t.requires_grad_(False)
    if args.strategy == "feature_extraction":
        opt = torch.optim.Adam(model.head.parameters(), lr=1e-3)
        trainable = "head"
    else:
        name, block = blocks(base, head_path)[-1]
        for t in block.parameters():
            t.requires_grad_(True)
        opt = torch.optim.Adam([{"params": model.head.parameters(), "lr": 1e-3},
                                {"params": block.parameters(), "lr": 1e-4}])
        trainable = "head + " + name

    print(json.dumps({"event": "setup", "process_start_wall": T_WALL,
                      "import_seconds": T_IMPORTED - T_PROCESS,
                      "train_images": len(train_set), "test_images": len(test_set),
                      "classes": train_set.classes, "strategy": args.strategy,
                      "trainable": trainable, "epochs": args.epochs, "workers": args.workers,
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "torchvision": torchvision.__version__,
                      "t": time.perf_counter() - T_PROCESS}), flush=True)

    excluded = 0.0  # seconds spent scoring on the test folder, off the clock
    for epoch in range(args.epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in loader:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * y.shape[0]
            correct += int((logits.argmax(1) == y).sum())
            seen += y.shape[0]
        t = time.perf_counter() - T_PROCESS - excluded
        eval_start = time.perf_counter()
        model.eval()
        test_correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                test_correct += int((model(x).argmax(1) == y).sum())
        eval_seconds = time.perf_counter() - eval_start
        excluded += eval_seconds
        print(json.dumps({"event": "epoch", "epoch": epoch + 1, "t": t,
                          "train_loss": loss_sum / max(1, seen),
                          "train_accuracy": correct / max(1, seen),
                          "test_accuracy": test_correct / len(test_set),
                          "eval_seconds": eval_seconds}), flush=True)
    print(json.dumps({"event": "done", "t": time.perf_counter() - T_PROCESS - excluded,
                      "eval_seconds": excluded}), flush=True)


if __name__ == "__main__":
    main()
