"""Kaizen's learning-rate schedule and last-batch rule, in Python, for the
PyTorch baselines that must train exactly like the trainer
(bench/train/train_bench.py, bench/e2e/e2e_folder_pytorch.py)."""

import math


def lr_factor(step, cfg, steps_per_epoch, epochs):
    """server/training/lr_schedule.cc, LrSchedule::Factor."""
    total = steps_per_epoch * max(1, epochs)
    warmup = max(0, min(total - 1, int(round(cfg["warmup_epochs"] * steps_per_epoch))))
    if step < warmup:
        return (step + 1) / warmup
    kind = cfg["schedule"]
    if kind == "step":
        every = max(1, cfg.get("step_epochs", 1))
        return cfg.get("step_gamma", 0.1) ** ((step // steps_per_epoch) // every)
    if kind == "cosine":
        span = max(1, total - warmup)
        progress = min(1.0, max(0.0, (step - warmup) / span))
        floor = cfg["min_lr_ratio"]
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def batches_per_epoch(n, batch_size, drop_last_fraction):
    """server/training/batch_sampler.cc: keep a short last batch only when it
    holds at least drop_last_fraction * batch_size images."""
    full, rest = divmod(n, batch_size)
    keep_rest = rest > 0 and (full == 0 or rest >= drop_last_fraction * batch_size)
    return full + (1 if keep_rest else 0)
