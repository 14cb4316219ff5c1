"""GPU sizing for LoRA fine-tuning: peak memory and time per training sample of InternVL.

    python bench/lora_sizing.py [--models internvl3-1b:8,16 internvl3-2b:8,16 internvl3-8b:8]
        [--batch-sizes 1,4] [--checkpointing off,on] [--steps 3] [--warmup 1] [--lora-r 16]
        [--clips-dir DIR] [--device cuda|cpu] [--json FILE]

Each --models entry is NAME:FRAMES[,FRAMES...]. NAME is internvl3-1b | internvl3-2b | internvl3-8b, the
published architecture at full size with RANDOM weights (ml.testing.random_internvl, nothing downloaded),
created in bf16 directly on the GPU (fp32 on CPU); or `tiny`, the test suite's tiny model, saved and loaded
back through `from_pretrained`. The model is made trainable by `ml.training.loop.with_lora`, the function
every training run uses (LoRA on `LORA_TARGET_MODULES`, rank --lora-r, gradient checkpointing as the row
says), and the batches are built by the training code: `read_samples` on a training JSONL of sample clips,
`TrainingDataset` (the inference prompt, frames at segment centres, the answer after it) and
`collate_examples`. A step is what `ml.train` does per optimiser step with grad_accum 1: forward under
autocast, backward, gradient clipping, AdamW step.

For each model, checkpointing setting, frame count and batch size b: --warmup untimed steps, then --steps
timed steps (CUDA synchronised around each). Reported:
  s/step, s/sample       median step time, and that over b
  samples/s              b over the median step time
  vs b1                  samples/s against batch size 1 of the same model, frames and checkpointing
  peak GPU mem           torch.cuda.max_memory_allocated over the timed steps: weights, LoRA, AdamW state,
                         activations and gradients; "OOM" when the step ran out of GPU memory
  tokens/sample          sequence length of a sample (image tokens + prompt text + answer)
  decode s/sample        frame decoding + processor for one sample on the CPU (a data-loader worker's
                         share, overlapped with the GPU in a real run; not part of s/step)
Weights GiB and trainable parameters are printed per model. Random weights compute as fast as trained ones:
the figures are the architecture's cost, not a trained model's quality.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch

from ml.testing.random_internvl import QWEN25, count_parameters

MODELS = sorted(QWEN25) + ["tiny"]


@dataclass
class Row:
    model: str
    frames: int
    batch_size: int
    checkpointing: bool
    tokens_per_sample: float
    decode_s_per_sample: float
    s_per_step: float | None = None
    s_per_sample: float | None = None
    samples_per_s: float | None = None
    vs_b1: float | None = None
    peak_gpu_mem_gib: float | None = None
    oom: bool = False


def parse_models(items: list[str]) -> list[tuple[str, list[int]]]:
    parsed = []
    for item in items:
        name, _, frames = item.partition(":")
        if name not in MODELS:
            raise argparse.ArgumentTypeError(f"{item}: model must be one of {', '.join(MODELS)}")
        try:
            counts = [int(f) for f in (frames or "8").split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item}: frames must be integers, e.g. {name}:8,16") from None
        if any(c < 1 for c in counts):
            raise argparse.ArgumentTypeError(f"{item}: frames must be >= 1")
        parsed.append((name, counts))
    return parsed


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",")]
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("values must be >= 1")
    return values


def checkpointing_list(text: str) -> list[bool]:
    words = {"off": False, "on": True}
    if any(w not in words for w in text.split(",")):
        raise argparse.ArgumentTypeError("use off, on or off,on")
    return [words[w] for w in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["internvl3-1b:8,16", "internvl3-2b:8,16",
                                                        "internvl3-8b:8"])
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 4])
    parser.add_argument("--checkpointing", type=checkpointing_list, default=[False, True])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--clips-dir", type=Path,
                        help="clips a generate_sample_clips call left here (a machine without ffmpeg)")
    parser.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the results here (rewritten after every row)")
    args = parser.parse_args(argv)
    try:
        models = parse_models(args.models)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    batch_sizes = args.batch_sizes if 1 in args.batch_sizes else [1, *args.batch_sizes]
    with tempfile.TemporaryDirectory(prefix="lora-sizing-") as tmp:
        return run(args, models, batch_sizes, device, Path(tmp))


def training_jsonl(args, work: Path, count: int) -> Path:
    from ml.testing.samples import generate_sample_clips, read_sample_clips, write_training_jsonl

    if args.clips_dir:
        clips = read_sample_clips(args.clips_dir)
        if len(clips) < count:
            raise SystemExit(f"--clips-dir {args.clips_dir} holds {len(clips)} clips; {count} are needed")
        clips = clips[:count]
    else:
        clips = generate_sample_clips(work / "clips", count, seconds=3.0, width=640, height=360, speech=False)
    return write_training_jsonl(work / "train.jsonl", clips)


def run(args, models, batch_sizes: list[int], device: torch.device, work: Path) -> int:
    from ml.training.data import read_samples

    samples = read_samples(training_jsonl(args, work, max(batch_sizes)))
    header = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "lora_r": args.lora_r, "steps": args.steps, "warmup": args.warmup,
              "models": {}}
    rows: list[Row] = []

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps({**header, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")

    print(f"device: {device}{' (' + header['gpu'] + ')' if header['gpu'] else ''}   torch {torch.__version__}   "
          f"LoRA r={args.lora_r}   timed steps: {args.steps} after {args.warmup} warm-up")
    for name, frame_counts in models:
        started = time.perf_counter()
        base, processor = build_base(name, device, work, [s.transcript for s in samples])
        weights = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None
        header["models"][name] = {"parameters": count_parameters(base), "build_s": time.perf_counter() - started,
                                  "weights_gib": weights, "dtype": str(next(base.parameters()).dtype)}
        print(f"\n{name}: {count_parameters(base) / 1e9:.3f} B parameters, {header['models'][name]['dtype']}, "
              f"built in {header['models'][name]['build_s']:.1f} s"
              + (f", weights {weights:.2f} GiB on the GPU" if weights is not None else ""))
        for checkpointing in args.checkpointing:
            model, trainable = trainable_model(base, processor, name, checkpointing, args.lora_r)
            header["models"][name]["trainable_parameters"] = trainable
            for frames in frame_counts:
                first: Row | None = None
                for b in batch_sizes:
                    row = measure(model, processor, base.config, samples[:b], name, frames, checkpointing,
                                  device, steps=args.steps, warmup=args.warmup)
                    if b == 1:
                        first = row
                    if first and first.samples_per_s and row.samples_per_s:
                        row.vs_b1 = row.samples_per_s / first.samples_per_s
                    rows.append(row)
                    print(format_row(row), flush=True)
                    save()
            base = model.unload()  # the plain base again, for the next setting's fresh LoRA
            if checkpointing:
                base.gradient_checkpointing_disable()
                base.disable_input_require_grads()
            del model
        print(f"  (LoRA trainable parameters: {trainable:,})")
        del base
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    print(format_table(rows))
    save()
    return 0


def build_base(name: str, device: torch.device, work: Path, transcripts: list[str]):
    from transformers import AutoProcessor, InternVLForConditionalGeneration

    from ml.testing.random_internvl import build_realistic_tokenizer, random_internvl3, tokenizer_corpus
    from ml.testing.tiny_internvl import build_tiny_internvl, internvl_processor

    if name == "tiny":
        folder = build_tiny_internvl(work / "tiny")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        base = InternVLForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device)
        return base, AutoProcessor.from_pretrained(folder)
    base = random_internvl3(name, device)
    tokenizer = build_realistic_tokenizer(tokenizer_corpus(transcripts))
    return base, internvl_processor(base.config, tokenizer)


def trainable_model(base, processor, name: str, checkpointing: bool, lora_r: int):
    from ml.training.config import TrainConfig
    from ml.training.loop import with_lora

    config = TrainConfig(base_model=name, lora_rank=lora_r, lora_alpha=2 * lora_r,
                         gradient_checkpointing=checkpointing)
    model, _ = with_lora(base, processor, config)
    model.train()
    return model, sum(p.numel() for p in model.parameters() if p.requires_grad)


def measure(model, processor, model_config, samples, name: str, frames: int, checkpointing: bool,
            device: torch.device, *, steps: int, warmup: int) -> Row:
    from ml.backends.internvl import InternVLInputs
    from ml.training.data import TrainingDataset, Unreadable, collate_examples

    inputs = InternVLInputs(processor, model_config, frames)
    dataset = TrainingDataset(inputs, samples)
    started = time.perf_counter()
    examples = [dataset[i] for i in range(len(dataset))]
    decode = (time.perf_counter() - started) / len(examples)
    batch = collate_examples(examples, pad_id=inputs.pad_id)
    if isinstance(batch, Unreadable):
        raise batch.error()
    b = len(samples)
    row = Row(name, frames, b, checkpointing, tokens_per_sample=float(batch["attention_mask"].sum()) / b,
              decode_s_per_sample=decode)
    dtype = next(model.parameters()).dtype
    batch = {k: (v.to(device, dtype=dtype) if k == "pixel_values" else v.to(device)) for k, v in batch.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step() -> None:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = []
    try:
        for _ in range(warmup):
            step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            sync()
            started = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - started)
    except torch.OutOfMemoryError:
        row.oom = True
    finally:
        optimizer.zero_grad(set_to_none=True)
        optimizer.state.clear()  # AdamW's moments and the inputs go before the next row measures
        batch.clear()
        if device.type == "cuda":
            if not row.oom:
                row.peak_gpu_mem_gib = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.empty_cache()
    if times:
        row.s_per_step = statistics.median(times)
        row.s_per_sample = row.s_per_step / b
        row.samples_per_s = b / row.s_per_step
    return row


def format_row(row: Row) -> str:
    ckpt = "on" if row.checkpointing else "off"
    mem = "OOM" if row.oom else (f"{row.peak_gpu_mem_gib:.2f} GiB" if row.peak_gpu_mem_gib is not None else "n/a")
    if row.s_per_step is None:
        timing = f"{'-':>8}  {'-':>9}  {'-':>9}  {'-':>6}"
    else:
        ratio = f"{row.vs_b1:.2f}x" if row.vs_b1 else "-"
        timing = f"{row.s_per_step:8.3f}  {row.s_per_sample:9.3f}  {row.samples_per_s:9.2f}  {ratio:>6}"
    return (f"{row.model:>12}  {row.frames:>6}  {ckpt:>5}  {row.batch_size:>5}  {timing}  {mem:>12}  "
            f"{row.tokens_per_sample:>13.0f}  {row.decode_s_per_sample:>15.3f}")


def format_table(rows: list[Row]) -> str:
    head = (f"{'model':>12}  {'frames':>6}  {'ckpt':>5}  {'batch':>5}  {'s/step':>8}  {'s/sample':>9}  "
            f"{'samples/s':>9}  {'vs b1':>6}  {'peak GPU mem':>12}  {'tokens/sample':>13}  {'decode s/sample':>15}")
    return "\n".join([head, *(format_row(r) for r in rows)])


if __name__ == "__main__":
    sys.exit(main())
