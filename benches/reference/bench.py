#!/usr/bin/env python3
"""PyTorch reference benchmark of the Tessera model, and the equality check against Tessera's own numbers.

  python3 bench.py train --preset tiny --json        training steps/s (forward + loss + backward + clip + AdamW)
  python3 bench.py infer --preset tiny --json        inference latency (classification, detection decoding)
  python3 bench.py check DIR                         same loss from the same weights and batch as Tessera
                                                     (DIR written by `tessera bench train --dump DIR`)
Output keys match `tessera bench train|infer --json` so benches/compare.sh can put them side by side.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402

LR, WEIGHT_DECAY, GRAD_CLIP = 1e-3, 0.05, 1.0  # TrainConfig::default()
N_CLASSES = 10


def config(preset, image_size=None):
    d = M.preset(preset)
    d["n_classes"] = N_CLASSES
    if image_size:  # ModelConfig::with_image_size
        patch = d["patch_size"]
        while patch > 2 and (image_size // patch) ** 2 < 36:
            patch //= 2
        d["image_size"] = max(image_size // patch, 2) * patch
        d["patch_size"] = patch
        d["n_bins"] = min(max(d["image_size"], 32), 512)
    return M.Config(d)


def load_dump(dir):
    """Config and initial weights written by `tessera bench train --dump DIR`."""
    expected = json.load(open(os.path.join(dir, "expected.json")))
    weights = M.read_safetensors(os.path.join(dir, "weights.safetensors"))
    d = dict(expected["config"])
    d["block_bias"] = "blocks.0.attn.qkv.bias" in weights
    # dense_head.* is Tessera's training-only auxiliary head for detection; the compared losses do not use it.
    return expected, M.Config(d), {k: torch.from_numpy(v) for k, v in weights.items() if not k.startswith("dense_head.")}


def build_model(args):
    """The reference model: from Tessera's dumped config and weights (`--from DIR`, what compare.sh does), or from
    the preset with this script's own seeded init."""
    if args.from_dir:
        _, cfg, state = load_dump(args.from_dir)
        model = M.Transformer(cfg)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            sys.exit(f"parameter names differ from Tessera's: missing {missing}, unexpected {unexpected}")
        return cfg, model
    cfg = config(args.preset, args.image_size)
    torch.manual_seed(0)
    return cfg, M.Transformer(cfg)


def forward_flops(cfg, b, n, l, head_rows, head_out):
    """Matmul FLOPs (2 per multiply-add) of one forward pass over `n` patches and `l` tokens; the same formula as
    src/cli/bench_model.rs. Attention counts the full T x T scores (masked entries are computed too)."""
    t = n + l
    d, hid = cfg.dim, cfg.dim * cfg.mlp_ratio
    per_layer = 2 * b * t * d * (3 * d + d + 2 * hid) + 2 * 2 * b * t * t * d
    return 2 * b * n * cfg.patch_dim * d + cfg.n_layers * per_layer + 2 * b * head_rows * d * head_out


def batch_for(cfg, objective, b, gen):
    n = cfg.n_patches
    patches = torch.randn(b, n, cfg.patch_dim, generator=gen)
    if objective == "detect":
        l = cfg.max_output_tokens - 1
        inp = torch.randint(0, cfg.vocab, (b, l), generator=gen)
        target = torch.randint(0, cfg.vocab, (b, l), generator=gen)
        weight = torch.ones(b, l)
        return (lambda m: M.detect_loss(m, patches, inp, target, weight)), forward_flops(cfg, b, n, l, l, cfg.vocab)
    if objective == "classify":
        labels = torch.randint(0, cfg.n_classes, (b,), generator=gen)
        return (lambda m: M.classify_loss(m, patches, labels)), forward_flops(cfg, b, n, 1, 1, cfg.vocab)
    prefix = n // 4
    return (lambda m: M.pretrain_loss(m, patches, prefix)), forward_flops(cfg, b, n, 0, n - prefix, cfg.patch_dim)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def bench_train(args):
    cfg, model = build_model(args)
    opt = M.make_optimizer(model, LR, WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(0)
    results = []
    for objective in args.objectives.split(","):
        loss_fn, fwd = batch_for(cfg, objective, args.batch, gen)
        times = {"forward": [], "backward": [], "clip": [], "optimizer": [], "step": []}
        start, step = time.perf_counter(), 0
        while True:
            t0 = time.perf_counter()
            loss = loss_fn(model)
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t2 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            t3 = time.perf_counter()
            opt.step()
            t4 = time.perf_counter()
            float(loss)
            if step >= args.warmup:
                for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                    v_ms = v * 1e3
                    times[k].append(v_ms)
            step += 1
            measured = step - args.warmup
            if measured >= args.min_steps and (time.perf_counter() - start > args.seconds or measured >= args.max_steps):
                break
        mean_step = sum(times["step"]) / len(times["step"])
        train_flops = 3 * fwd
        results.append({
            "objective": objective,
            "what": "forward + loss + backward + global-norm clip + AdamW",
            "batch": args.batch,
            "seq_len": cfg.n_patches + (cfg.max_output_tokens - 1 if objective == "detect" else 1 if objective == "classify" else 0),
            "steps": len(times["step"]),
            "step_ms_mean": mean_step,
            "step_ms_p50": pct(times["step"], 50),
            "steps_per_s": 1e3 / mean_step,
            "images_per_s": args.batch * 1e3 / mean_step,
            "breakdown_ms": {k: sum(v) / len(v) for k, v in times.items() if k != "step"},
            "gflop_per_step": train_flops / 1e9,
            "gflops": train_flops / 1e9 / (mean_step / 1e3),
            "final_loss": float(loss),
        })
    return {"group": "train", "preset": cfg.preset, "image_size": cfg.image_size, "patch_size": cfg.patch_size,
            "results": results, "peak_rss_mb": peak_rss_mb()}


def time_calls(fn, seconds, min_reps, max_reps=1000):
    fn()
    ts, start = [], time.perf_counter()
    while len(ts) < min_reps or (time.perf_counter() - start < seconds and len(ts) < max_reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return ts


def bench_infer(args):
    cfg, model = build_model(args)
    model.eval()
    results = []
    gen = torch.Generator().manual_seed(1)
    steps = 5 * cfg.max_objects
    with torch.no_grad():
        for b in (1, args.batch_infer):
            patches = torch.randn(b, cfg.n_patches, cfg.patch_dim, generator=gen)
            cases = [("classify", None, lambda: M.classify_logits(model, patches)),
                     ("detect", True, lambda: M.detect_decode_full(model, patches, steps, cache=True))]
            if not args.skip_no_cache:
                cases.append(("detect", False, lambda: M.detect_decode_full(model, patches, steps, cache=False)))
            for task, cache, fn in cases:
                ts = time_calls(fn, args.seconds, 3 if cache is False else 5)
                r = {"task": task, "batch": b, "p50_ms": pct(ts, 50), "p95_ms": pct(ts, 95),
                     "per_image_ms": pct(ts, 50) / b, "reps": len(ts)}
                if task == "detect":
                    r["kv_cache"] = cache
                    r["tokens"] = steps
                results.append(r)
    return {"group": "infer", "preset": cfg.preset, "image_size": cfg.image_size, "patch_size": cfg.patch_size,
            "results": results, "peak_rss_mb": peak_rss_mb()}


def check(args):
    """Loads Tessera's dumped initial weights and batch, recomputes every loss, takes one AdamW step on the
    detection loss and recomputes it; all must match Tessera's values within `--rtol`."""
    expected, cfg, state = load_dump(args.dir)
    model = M.Transformer(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        sys.exit(f"parameter names differ: missing {missing}, unexpected {unexpected}")
    batch = {k: torch.from_numpy(v) for k, v in M.read_safetensors(os.path.join(args.dir, "batch.safetensors")).items()}
    patches = batch["patches"]
    ours = {
        "detect": float(M.detect_loss(model, patches, batch["det_input"].long(), batch["det_target"].long(), batch["det_weight"])),
        "classify": float(M.classify_loss(model, patches, batch["cls_labels"].long())),
        "pretrain": float(M.pretrain_loss(model, patches, expected["pretrain_prefix"])),
    }
    opt = M.make_optimizer(model, expected["lr"], expected["weight_decay"])
    for _ in range(expected["opt_steps"]):
        loss = M.detect_loss(model, patches, batch["det_input"].long(), batch["det_target"].long(), batch["det_weight"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), expected["grad_clip"])
        opt.step()
    ours["detect_after_steps"] = float(M.detect_loss(model, patches, batch["det_input"].long(), batch["det_target"].long(), batch["det_weight"]))
    ok, rows = True, []
    for k, v in ours.items():
        t = expected["losses"][k]
        rel = abs(v - t) / max(abs(t), 1e-12)
        good = rel <= args.rtol
        ok &= good
        rows.append({"loss": k, "tessera": t, "pytorch": v, "rel_diff": rel, "ok": good})
    out = {"group": "check", "rtol": args.rtol, "opt_steps": expected["opt_steps"], "results": rows, "ok": ok}
    return out, ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["train", "infer", "check"])
    p.add_argument("dir", nargs="?", help="for check: the folder written by `tessera bench train --dump`")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--from", dest="from_dir", help="build the model from Tessera's dump (config + initial weights)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--objectives", default="detect,classify,pretrain")
    p.add_argument("--batch", type=int, default=32, help="training batch (TrainConfig default 32)")
    p.add_argument("--batch-infer", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-steps", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10.0, help="time budget per measurement")
    p.add_argument("--skip-no-cache", action="store_true")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    meta = {"framework": f"pytorch {torch.__version__}", "threads": torch.get_num_threads(),
            "python": platform.python_version(), "blas": "openblas (Debian libopenblas0-pthread)"}
    ok = True
    if args.what == "train":
        out = bench_train(args)
    elif args.what == "infer":
        out = bench_infer(args)
    else:
        if not args.dir:
            p.error("check needs the dump folder")
        out, ok = check(args)
    out.update(meta)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for r in out["results"]:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items() if k != "breakdown_ms"),
                  r.get("breakdown_ms", ""))
        if out.get("peak_rss_mb"):
            print(f"peak RSS {out['peak_rss_mb']:.0f} MB")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
