"""The CUDA path that runs on a lent GPU (PyTorch, no TensorRT): FP16, channels-last, CUDA graphs, at 512×512,
batch 1 and 8, for each registered architecture; and both architectures trained the same way (the U-Base recipe of
benchmarks/real/experiment.py) and evaluated on the same held-out set, to compare their mIoU in one run.

Run on a GPU machine: PYTHONPATH=. python3 benchmarks/speed/gpu_bench.py --out gpu.json
TensorRT numbers never come from here: they appear only when measured on a machine that has TensorRT.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from trainer.models import available, build_model


@torch.no_grad()
def bench_inference(arch: str, batch: int, size: int = 512, iters: int = 50) -> dict:
    model = build_model(arch).cuda().eval().half().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(5):  # warm-up (cuDNN picks its kernels) before capture
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(x)
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):  # five timed blocks; the median block is reported
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / iters)
    ms = sorted(times)[len(times) // 2]
    return {"arch": arch, "batch": batch, "size": size, "precision": "fp16", "channels_last": True, "cuda_graph": True,
            "latency_ms": round(ms, 3), "fps": round(batch * 1000 / ms, 1)}


def train_and_compare(steps: int, quick: bool) -> dict:
    from benchmarks.real.experiment import Scale
    from runtime.data.dataset import open_dataset
    from runtime.data.synthesize import synthesize_dataset
    from trainer.checkpoint import model_from_checkpoint
    from trainer.evaluate import evaluate
    from trainer.models import get_arch
    from trainer.regimes import run_base
    from trainer.train import TrainConfig, TrainingDiverged

    scale = Scale()
    n_mixed, n_test = (8, 2) if quick else (scale.mixed, scale.test)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        mixed = synthesize_dataset("mixed", n_mixed, Path(tmp) / "mixed", seed=1)  # the experiment's seeds
        test = open_dataset(synthesize_dataset("mixed", n_test, Path(tmp) / "test", seed=99))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        for arch in available():
            began = time.perf_counter()
            config = TrainConfig(regime="U-Base", arch=arch, steps=steps, size=scale.size, device=device,
                                 val_every=max(1, steps // 6))
            try:
                run_base(mixed, Path(tmp) / arch, config)
                diverged = None
            except TrainingDiverged as err:  # the best checkpoint so far is still evaluated, and the stop reported
                diverged = err.reason
            model, _ = model_from_checkpoint(Path(tmp) / arch / "best.pt")
            metrics = evaluate(model.to(device), (test.load(i) for i in range(len(test))), get_arch(arch).stride,
                               torch.device(device))
            out[arch] = {"miou": metrics["miou"], "fwiou": metrics["fwiou"], "dice": metrics["dice"],
                         "count_accuracy": metrics.get("counts", {}).get("count_accuracy"),
                         "train_seconds": round(time.perf_counter() - began, 1), "steps": steps, "diverged": diverged}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    report = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__}
    if torch.cuda.is_available():
        report["inference"] = [bench_inference(a, b) for a in available() for b in (1, 8)]
        print(json.dumps(report["inference"], indent=1), flush=True)
    report["training"] = train_and_compare(args.steps, args.quick)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
