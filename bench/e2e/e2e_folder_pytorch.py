#!/usr/bin/python3
"""The textbook PyTorch fine-tuning pipeline on an image folder, the baseline of
bench/e2e/e2e_folder_bench.sh.

torchvision.datasets.ImageFolder with transforms (Grayscale/RGB to the model's
channels, Resize to its input, ToTensor, Normalize with its mean/std), a
DataLoader (batch_size, shuffle=True, num_workers=--workers), and the same
optimisation that Kaizen resolved for the job (`--config`: the
resolvedHyperparameters of `kaizenctl --output=json jobs get ID`): AdamW with
the head's learning rate and the backbone's (lr * backbone_lr_multiplier),
weight decay, cosine schedule with warm-up stepped per batch, label smoothing,
Kaizen's last-batch rule (drop_last when the short batch is below
drop_last_fraction * batch_size), the same stratified validation split
fraction, evaluated after every epoch, and the model saved at the end.

The model is `--model`, the TorchScript file that Kaizen also fine-tunes from
(torch.jit.load; its kaizen.json gives input shape and normalisation). As
Kaizen's trainer does for FULL, the linear head `fc` is re-initialised
(torch.nn.Linear's default init) for the folder's classes; its shape must
already match (the built-ins' default head has 10 outputs).

Prints JSON lines: {"event": "setup", ...} (import and dataset-build seconds),
one {"event": "epoch", "epoch", "seconds", "t" (seconds since the process
started), "train_loss", "train_accuracy", "val_loss", "val_accuracy"} per
epoch, then {"event": "done", "t", "cpu_seconds"}.

Run it with /usr/bin/python3 (Debian's interpreter with torch 1.13).
"""

import time

T_PROCESS = time.perf_counter()  # as early as possible: imports count

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402
from torchvision import transforms  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from kaizen_schedule import batches_per_epoch, lr_factor  # noqa: E402  (Kaizen's schedule and batch rule)

T_IMPORTED = time.perf_counter()


def config_from_job(hp):
    """Proto3 JSON of kaizen.v1.Hyperparameters -> train_bench.py's config keys."""
    opt, sched = hp.get("optimizer", {}), hp.get("schedule", {})
    kind = opt.get("kind", "OPTIMIZER_ADAMW").replace("OPTIMIZER_", "").lower()
    return {
        "epochs": int(hp["epochs"]),
        "batch_size": int(hp["batchSize"]),
        "learning_rate": float(hp["learningRate"]),
        "backbone_lr_multiplier": float(hp.get("backboneLrMultiplier", 1.0)),
        "optimizer": kind,
        "beta1": float(opt.get("beta1", 0.9)), "beta2": float(opt.get("beta2", 0.999)),
        "momentum": float(opt.get("momentum", 0.0)), "nesterov": bool(opt.get("nesterov", False)),
        "weight_decay": float(opt.get("weightDecay", 0.0)),
        "schedule": sched.get("kind", "SCHEDULE_CONSTANT").replace("SCHEDULE_", "").lower(),
        "warmup_epochs": float(sched.get("warmupEpochs", 0.0)),
        "min_lr_ratio": float(sched.get("minLrRatio", 0.0)),
        "step_epochs": int(sched.get("stepEpochs", 1)), "step_gamma": float(sched.get("stepGamma", 0.1)),
        "label_smoothing": float(hp.get("labelSmoothing", 0.0)),
        "drop_last_fraction": float(hp.get("dropLastFraction", 0.0)),
        "gradient_clip_norm": float(hp.get("gradientClipNorm", 0.0)),
        "validation_split": float(hp.get("validation", {}).get("split", 0.0)),
        "augment": bool(hp.get("augmentation", {}).get("enabled", False)),
        "seed": int(hp.get("seed", 1)),
    }


def stratified_split(targets, fraction, seed):
    """Per class, round(fraction * n) images held out (at least 1, at most
    n - 1), as Kaizen's StratifiedSplit; our own shuffle, not Kaizen's."""
    rng = np.random.default_rng(seed)
    targets = np.asarray(targets)
    train, held = [], []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        n = len(idx)
        k = int(math.floor(fraction * n + 0.5))
        if fraction > 0 and n >= 2:
            k = min(max(k, 1), n - 1)
        if n < 2:
            k = 0
        held += idx[:k].tolist()
        train += idx[k:].tolist()
    return sorted(train), sorted(held)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="TorchScript base model (with kaizen.json)")
    p.add_argument("--folder", required=True, help="image folder: one sub-folder per class")
    p.add_argument("--config", required=True,
                   help="JSON of the Kaizen job's resolvedHyperparameters (or the whole Job)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader num_workers")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--save", default="", help="write the fine-tuned TorchScript model here")
    args = p.parse_args()

    with open(args.config) as f:
        doc = json.load(f)
    cfg = config_from_job(doc.get("resolvedHyperparameters", doc))
    if cfg["augment"]:
        sys.exit("e2e_folder_pytorch.py: the Kaizen job augments; run both with --augment=off")
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg["seed"] & 0x7FFFFFFF)

    extra = {"kaizen.json": ""}
    model = torch.jit.load(args.model, map_location="cpu", _extra_files=extra)
    meta = json.loads(extra["kaizen.json"] or "{}")
    shape = [int(x) for x in (meta.get("input_shape") or meta.get("inputShape") or [1, 28, 28])]
    norm = meta.get("normalization", {})
    channels = shape[0]
    mean = [float(x) for x in norm.get("mean", [0.0])]
    std = [float(x) for x in norm.get("std", [1.0])]
    mean = (mean * channels)[:channels] if len(mean) == 1 else mean
    std = (std * channels)[:channels] if len(std) == 1 else std

    # --- dataset build: counted in the wall time
    t_data = time.perf_counter()
    tf = transforms.Compose([
        transforms.Grayscale(1) if channels == 1 else transforms.Lambda(lambda im: im.convert("RGB")),
        transforms.Resize((shape[1], shape[2])),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    dataset = torchvision.datasets.ImageFolder(args.folder, transform=tf)
    train_idx, val_idx = stratified_split(dataset.targets, cfg["validation_split"], cfg["seed"])
    train_set = Subset(dataset, train_idx)
    n = len(train_set)
    bs = cfg["batch_size"]
    steps = batches_per_epoch(n, bs, cfg["drop_last_fraction"])
    # Kaizen keeps a short last batch only when it holds >= drop_last_fraction * bs.
    loader = DataLoader(train_set, batch_size=bs, shuffle=True, num_workers=args.workers,
                        drop_last=steps == n // bs)
    val_loader = (DataLoader(Subset(dataset, val_idx), batch_size=bs, shuffle=False,
                             num_workers=args.workers) if val_idx else None)
    data_seconds = time.perf_counter() - t_data

    # --- model: Kaizen's FULL re-initialises the head with the same shape
    fc_weight = model.fc.weight
    if fc_weight.shape[0] != len(dataset.classes):
        sys.exit(f"e2e_folder_pytorch.py: the head has {fc_weight.shape[0]} outputs, the folder "
                 f"{len(dataset.classes)} classes")
    with torch.no_grad():
        bound = 1.0 / math.sqrt(fc_weight.shape[1])
        model.fc.weight.uniform_(-bound, bound)
        model.fc.bias.uniform_(-bound, bound)
    head = list(model.fc.parameters())
    head_ids = {id(t) for t in head}
    backbone = [t for t in model.parameters() if id(t) not in head_ids]
    for t in model.parameters():
        t.requires_grad_(True)
    lr = cfg["learning_rate"]
    groups = [{"params": head, "lr": lr},
              {"params": backbone, "lr": lr * cfg["backbone_lr_multiplier"]}]
    base_lrs = [g["lr"] for g in groups]
    betas = (cfg["beta1"], cfg["beta2"])
    if cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=cfg["momentum"], nesterov=cfg["nesterov"],
                              weight_decay=cfg["weight_decay"])
    elif cfg["optimizer"] == "adam":
        opt = torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=cfg["weight_decay"])
    else:
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=cfg["weight_decay"])
    epochs, smoothing = cfg["epochs"], cfg["label_smoothing"]

    print(json.dumps({"event": "setup", "import_seconds": T_IMPORTED - T_PROCESS,
                      "dataset_seconds": data_seconds, "images": len(dataset),
                      "train_images": n, "val_images": len(val_idx), "classes": len(dataset.classes),
                      "input_shape": shape, "mean": mean, "std": std, "epochs": epochs,
                      "batch_size": bs, "steps_per_epoch": steps, "drop_last": loader.drop_last,
                      "workers": args.workers, "threads": torch.get_num_threads(),
                      "optimizer": type(opt).__name__, "lrs": base_lrs,
                      "weight_decay": cfg["weight_decay"], "schedule": cfg["schedule"],
                      "warmup_epochs": cfg["warmup_epochs"], "label_smoothing": smoothing,
                      "validation_split": cfg["validation_split"], "torch": torch.__version__,
                      "torchvision": torchvision.__version__,
                      "t": time.perf_counter() - T_PROCESS}), flush=True)

    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        loss_sum, correct, seen, step = 0.0, 0, 0, 0
        for x, y in loader:
            if step >= steps:
                break
            factor = lr_factor(epoch * steps + step, cfg, steps, epochs)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * factor
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["gradient_clip_norm"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["gradient_clip_norm"])
            opt.step()
            value = loss.item()
            if not math.isfinite(value):
                sys.exit(f"loss became {value} at epoch {epoch + 1} step {step + 1}")
            loss_sum += value * y.shape[0]
            correct += int((logits.argmax(1) == y).sum().item())
            seen += y.shape[0]
            step += 1
        row = {"event": "epoch", "epoch": epoch + 1, "train_loss": loss_sum / max(1, seen),
               "train_accuracy": correct / max(1, seen), "steps": step}
        if val_loader is not None:
            model.eval()
            vloss, vcorrect, vseen = 0.0, 0, 0
            with torch.no_grad():
                for x, y in val_loader:
                    logits = model(x)
                    vloss += float(F.cross_entropy(logits, y, reduction="sum"))
                    vcorrect += int((logits.argmax(1) == y).sum())
                    vseen += y.shape[0]
            row.update(val_loss=vloss / vseen, val_accuracy=vcorrect / vseen)
        now = time.perf_counter()
        row.update(seconds=now - start, t=now - T_PROCESS)
        print(json.dumps(row), flush=True)

    if args.save:
        model.eval()
        torch.jit.save(model, args.save)
    print(json.dumps({"event": "done", "t": time.perf_counter() - T_PROCESS,
                      "cpu_seconds": time.process_time()}), flush=True)


if __name__ == "__main__":
    main()
