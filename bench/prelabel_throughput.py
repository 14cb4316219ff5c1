"""Pre-labelling throughput: clips per second of a backend's `predict` at several batch sizes.

    python bench/prelabel_throughput.py [--backend internvl|affectgpt] [--batch-sizes 1,4,16] [--clips 16]
        [--frames 8] [--max-new-tokens 32] [--model DIR [--checkpoint FILE] | --random-init internvl3-1b|2b|8b]
        [--device cuda|cpu] [--seconds 3] [--size 640x360] [--warmup 1] [--repeats 1] [--threads N]
        [--natural-stop] [--decode-workers 1,auto] [--clips-dir DIR] [--work-dir DIR] [--json FILE] [--keep]

Generates N sample clips (ml.testing.samples, tone soundtrack), loads ONE backend through its production
constructor, then for each batch size b (in one run, on the same clips) sets `backend.batch_size = b`,
runs one untimed warm-up batch of b clips and times `backend.predict(all N clips)` (--repeats times, the
median is kept). Reported per batch size:
  clips/s, s/clip            wall time of predict() over the N clips (frame decoding and the processor
                             included, as in a worker); CUDA is synchronised before and after;
  prep s/clip, gen s/clip    the parts spent in frame decoding + processor (InternVL `prepare`, AffectGPT
                             `load_media`) and in the LLM's `generate` (prefill + decoding);
  prompt tok/clip            mean `Prediction.prompt_tokens`; for InternVL also the image tokens counted in
                             the real input ids (must be frames x image tokens per frame) and the text rest;
  new tok/clip               decoding steps each clip went through (its batch's `generate` steps);
  vs b1                      clips/s against batch size 1 of the same run (1 is always measured), with
                             the same number of readers;
  readers, vs 1 reader       --decode-workers: how many clips of a batch are decoded at once (ml.video.
                             read_each; "auto" is the backends' default, the CPUs up to 8), and clips/s
                             against 1 reader at the same batch size when 1 is in the list. With several
                             readers AffectGPT's prep s/clip sums the readers' times (CPU time, not wall);
                             InternVL's is the wall time of `prepare`;
  peak GPU mem               torch.cuda.max_memory_allocated during the timed runs (weights included);
  GPU util                   mean/max of utilization.gpu sampled every 0.1 s during the timed runs, via
                             pynvml (nvidia-ml-py) when importable, else `nvidia-smi` polled in a thread;
                             "n/a" on CPU.

New tokens are forced: the model's generation_config gets `min_new_tokens = max_new_tokens` (the backends
fill unset generation fields from it), so EOS cannot end a clip early and every batch size decodes the same
number of steps -- random weights write garbage, and a real model stopping at different lengths would
otherwise blur the comparison. AffectGPT's own stop-sequence rule ("###") can still end its batches early:
"new tok/clip" shows what really ran. --natural-stop leaves the model's stopping alone.

Model sources:
  default          a tiny random model built into a temp dir by ml.testing (same files as a hub checkpoint,
                   loaded back by the backend): measures the pipeline, not a real model's compute;
  --model DIR      an existing model folder (AffectGPT: plus --checkpoint, default DIR/checkpoint.pth if any);
  --random-init C  (InternVL only) C = internvl3-1b | 2b | 8b: the InternVL3-{1B,2B,8B}-hf architecture at
                   full size with RANDOM weights, nothing downloaded. It is instantiated directly on the target
                   device (bf16 on CUDA, fp32 on CPU) by ml.testing.random_internvl, saved to a temp dir
                   with its tokenizer and processor (ml.testing.tiny_internvl.save_internvl), freed, and
                   loaded back through InternVLBackend -- the production path, no constructor hook. Build,
                   save and load times are printed.
                   The tokenizer has the real vocabulary size, with the Qwen2.5 / InternVL special tokens at
                   their real ids, and BPE merges trained on the prompt texts so that English words are one
                   token each as in Qwen's vocabulary: image tokens are exact, text tokens approximate.
                   On CPU this works but is slow (warned).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch

from ml.testing.random_internvl import (
    QWEN25,
    build_realistic_tokenizer,
    count_parameters,
    random_internvl3,
    tokenizer_corpus,
)
from ml.testing.tiny_internvl import save_internvl


def build_random_internvl(name: str, out_dir: Path, *, device: torch.device, transcripts: list[str],
                          seed: int = 0) -> tuple[Path, int, dict[str, float]]:
    """Save a full-size random InternVL3 (weights, tokenizer, processor) into out_dir for InternVLBackend;
    return it with its parameter count and how long the tokenizer, the model and the save took."""
    times = {}
    started = time.perf_counter()
    tokenizer = build_realistic_tokenizer(tokenizer_corpus(transcripts))
    times["tokenizer_s"] = time.perf_counter() - started

    started = time.perf_counter()
    model = random_internvl3(name, device, seed=seed)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times["build_s"] = time.perf_counter() - started
    n_params = count_parameters(model)

    started = time.perf_counter()
    save_internvl(model, tokenizer, out_dir)
    times["save_s"] = time.perf_counter() - started
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out_dir, n_params, times


# --- GPU utilisation ------------------------------------------------------------------------------------

class GpuMonitor:
    """Samples utilization.gpu of the benchmarked device in a thread while a section runs."""

    def __init__(self, device: torch.device, interval: float = 0.1) -> None:
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = None
        self.how = "n/a (CPU run)"
        if device.type != "cuda":
            return
        index = device.index if device.index is not None else torch.cuda.current_device()
        ident = _gpu_identity(index)
        problems = []
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(ident)
            except Exception:  # noqa: BLE001 -- fall back to the physical index
                handle = pynvml.nvmlDeviceGetHandleByIndex(int(_physical_index(index)))
            pynvml.nvmlDeviceGetUtilizationRates(handle)  # NotSupported (e.g. MIG) raises here, not later
            self._read, self.how = (lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)), "pynvml"
            return
        except ImportError:
            problems.append("no pynvml")
        except Exception as exc:  # noqa: BLE001 -- any NVML failure: try nvidia-smi
            problems.append(f"NVML: {exc}")
        if shutil.which("nvidia-smi") is None:
            self.how = f"n/a ({'; '.join(problems + ['no nvidia-smi'])})"
            return
        command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", ident]

        def read() -> float:
            out = subprocess.run(command, check=False, capture_output=True, text=True, timeout=5).stdout.strip()
            return float(out.splitlines()[0])  # "[N/A]" (e.g. MIG) raises: that sample is skipped

        try:
            read()
            self._read, self.how, self.interval = read, f"nvidia-smi -i {ident}", max(interval, 0.2)
        except Exception as exc:  # noqa: BLE001
            self.how = f"n/a ({'; '.join(problems + [f'nvidia-smi: {type(exc).__name__}'])})"

    @property
    def available(self) -> bool:
        return self._read is not None

    def start(self) -> None:
        self.samples = []
        if not self.available:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[float, float, int] | None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if not self.samples:
            return None
        return statistics.fmean(self.samples), max(self.samples), len(self.samples)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # one failed poll is not worth a crash
                self.samples.append(self._read())
            self._stop.wait(self.interval)


def _physical_index(index: int) -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    parts = [p.strip() for p in visible.split(",") if p.strip()]
    return parts[index] if index < len(parts) else str(index)


def _gpu_identity(index: int) -> str:
    """GPU-<uuid> (what NVML and nvidia-smi -i accept, whatever CUDA_VISIBLE_DEVICES renumbered)."""
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    except Exception:  # noqa: BLE001
        return _physical_index(index)


# --- instrumentation ------------------------------------------------------------------------------------

@dataclass
class Counters:
    prep_s: float = 0.0
    generate_s: float = 0.0
    steps_per_clip: list[int] = field(default_factory=list)  # decoding steps each clip's batch ran
    image_tokens_per_clip: list[int] = field(default_factory=list)

    def reset(self) -> None:
        self.prep_s = self.generate_s = 0.0
        self.steps_per_clip, self.image_tokens_per_clip = [], []


def instrument(backend, kind: str, device: torch.device) -> Counters:
    """Wrap the backend's instance methods (not its code) to time preparation and generation and to count
    decoding steps and image tokens."""
    counters = Counters()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn, slot: str, after=None):
        def wrapper(*args, **kwargs):
            sync()
            started = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            setattr(counters, slot, getattr(counters, slot) + time.perf_counter() - started)
            if after is not None:
                after(out)
            return out
        return wrapper

    def count_steps(out) -> None:
        steps = getattr(out, "scores", None) or getattr(out, "logits", None)
        counters.steps_per_clip.extend([len(steps)] * out.sequences.shape[0])

    if kind == "internvl":
        image_token = backend.base_model.config.image_token_id

        def count_image_tokens(batch) -> None:
            if batch.inputs is not None:
                counters.image_tokens_per_clip.extend((batch.inputs["input_ids"] == image_token).sum(1).tolist())

        backend.prepare = timed(backend.prepare, "prep_s", count_image_tokens)
        backend.model.generate = timed(backend.model.generate, "generate_s", count_steps)
    else:
        backend.load_media = timed(backend.load_media, "prep_s")
        llm = backend.model.llama_model
        llm.generate = timed(llm.generate, "generate_s", count_steps)
    return counters


def force_new_tokens(backend, kind: str, n: int) -> None:
    """min_new_tokens = n on the generation config the backend's generate() falls back to."""
    model = backend.base_model if kind == "internvl" else backend.model.llama_model.get_base_model()
    model.generation_config.min_new_tokens = n


# --- the run --------------------------------------------------------------------------------------------

@dataclass
class Row:
    batch_size: int
    seconds: float
    clips_per_s: float
    s_per_clip: float
    prep_s_per_clip: float
    generate_s_per_clip: float
    prompt_tokens_per_clip: float
    image_tokens_per_clip: float | None
    text_tokens_per_clip: float | None
    new_tokens_per_clip: float
    speedup_vs_b1: float = 1.0
    decode_workers: int = 1
    speedup_vs_one_reader: float | None = None
    peak_gpu_mem_gib: float | None = None
    gpu_util_mean: float | None = None
    gpu_util_max: float | None = None
    gpu_util_samples: int = 0


def measure(backend, clips, counters: Counters, monitor: GpuMonitor, device: torch.device, batch_size: int,
            *, warmup: int, repeats: int) -> Row:
    backend.batch_size = batch_size
    for _ in range(warmup):
        backend.predict(clips[:batch_size])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    walls, prompt_tokens, totals = [], [], Counters()
    monitor.start()
    for _ in range(repeats):
        counters.reset()  # the wrappers hold this object: reset it in place
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        predictions = backend.predict(clips)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - started)
        failed = [p for p in predictions if p.error]
        if failed:
            raise RuntimeError(f"{len(failed)} clips failed, e.g. {failed[0].clip_id}: {failed[0].error}")
        prompt_tokens += [p.prompt_tokens for p in predictions]
        totals.prep_s += counters.prep_s
        totals.generate_s += counters.generate_s
        totals.steps_per_clip += counters.steps_per_clip
        totals.image_tokens_per_clip += counters.image_tokens_per_clip
    util = monitor.stop()
    wall = statistics.median(walls)
    n, runs = len(clips), len(clips) * repeats
    prompt = statistics.fmean(prompt_tokens)
    image = statistics.fmean(totals.image_tokens_per_clip) if totals.image_tokens_per_clip else None
    return Row(batch_size=batch_size, seconds=wall, clips_per_s=n / wall, s_per_clip=wall / n,
               prep_s_per_clip=totals.prep_s / runs, generate_s_per_clip=totals.generate_s / runs,
               prompt_tokens_per_clip=prompt, image_tokens_per_clip=image,
               text_tokens_per_clip=None if image is None else prompt - image,
               new_tokens_per_clip=statistics.fmean(totals.steps_per_clip) if totals.steps_per_clip else 0.0,
               peak_gpu_mem_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
               gpu_util_mean=util[0] if util else None, gpu_util_max=util[1] if util else None,
               gpu_util_samples=util[2] if util else 0)


def format_table(rows: list[Row], monitor: GpuMonitor) -> str:
    head = (f"{'batch':>5}  {'clips/s':>8}  {'s/clip':>7}  {'prep s/clip':>11}  {'gen s/clip':>10}  "
            f"{'prompt tok/clip':>15}  {'image+text':>12}  {'new tok/clip':>12}  {'vs b1':>6}  {'readers':>7}  "
            f"{'vs 1 reader':>11}  {'peak GPU mem':>12}  GPU util mean/max")
    lines = [head, "-" * len(head)]
    for r in rows:
        split = (f"{r.image_tokens_per_clip:.0f}+{r.text_tokens_per_clip:.0f}"
                 if r.image_tokens_per_clip is not None else "n/a")
        mem = f"{r.peak_gpu_mem_gib:.2f} GiB" if r.peak_gpu_mem_gib is not None else "n/a"
        vs_one = f"{r.speedup_vs_one_reader:.2f}x" if r.speedup_vs_one_reader is not None else "-"
        if r.gpu_util_mean is not None:
            util = f"{r.gpu_util_mean:.0f}% / {r.gpu_util_max:.0f}% ({r.gpu_util_samples} samples)"
        else:
            util = "n/a" if monitor.how.startswith("n/a") else "n/a (no samples)"
        lines.append(f"{r.batch_size:>5}  {r.clips_per_s:>8.3f}  {r.s_per_clip:>7.3f}  {r.prep_s_per_clip:>11.3f}  "
                     f"{r.generate_s_per_clip:>10.3f}  {r.prompt_tokens_per_clip:>15.1f}  {split:>12}  "
                     f"{r.new_tokens_per_clip:>12.1f}  {r.speedup_vs_b1:>5.2f}x  {r.decode_workers:>7}  "
                     f"{vs_one:>11}  {mem:>12}  {util}")
    return "\n".join(lines)


def parse_batch_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be positive integers, e.g. 1,4,16")
    return list(dict.fromkeys(sizes))


def parse_decode_workers(text: str) -> list[int]:
    from ml.video import decode_workers

    try:
        counts = [decode_workers() if part.strip() == "auto" else int(part) for part in text.split(",")
                  if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("reader counts are positive integers or auto, e.g. 1,auto") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("reader counts are positive integers or auto, e.g. 1,auto")
    return sorted(set(counts))  # 1 first: the others are compared with it


def set_decode_workers(backend, kind: str, workers: int) -> None:
    if kind == "internvl":
        backend.inputs.decode_workers = workers
    else:
        backend.decode_workers = workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["internvl", "affectgpt"], default="internvl")
    parser.add_argument("--batch-sizes", type=parse_batch_sizes, default=[1, 4, 16])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (InternVL; AffectGPT uses 8)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="an existing model folder")
    source.add_argument("--random-init", choices=sorted(QWEN25),
                        help="full-size InternVL3 architecture with random weights (no download)")
    parser.add_argument("--checkpoint", type=Path, help="AffectGPT checkpoint (default MODEL/checkpoint.pth)")
    parser.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each generated clip")
    parser.add_argument("--size", default="640x360", help="generated clip size WxH")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches before each batch size")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per batch size (median kept)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--natural-stop", action="store_true", help="do not force min_new_tokens")
    parser.add_argument("--decode-workers", type=parse_decode_workers, default="auto",
                        help="clips of a batch decoded at once, a list to compare: e.g. 1,auto (default auto)")
    parser.add_argument("--clips-dir", type=Path,
                        help="use the clips a generate_sample_clips call left here (a machine without ffmpeg)")
    parser.add_argument("--work-dir", type=Path, help="where clips and built models go (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    if args.random_init and args.backend != "internvl":
        parser.error("--random-init builds InternVL architectures: use it with --backend internvl")
    if args.clips < 1 or args.frames < 1 or args.max_new_tokens < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--clips, --frames, --max-new-tokens and --repeats must be >= 1, --warmup >= 0")
    batch_sizes = args.batch_sizes if 1 in args.batch_sizes else [1, *args.batch_sizes]
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="prelabel-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, batch_sizes, width, height, device, work)
    finally:
        if args.keep or args.work_dir:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args, batch_sizes: list[int], width: int, height: int, device: torch.device, work: Path) -> int:
    from ml.testing.samples import generate_sample_clips, read_sample_clips
    from ml.types import ClipInput

    started = time.perf_counter()
    if args.clips_dir:
        made = read_sample_clips(args.clips_dir)[:args.clips]
        if len(made) < args.clips:
            raise SystemExit(f"--clips-dir {args.clips_dir} holds {len(made)} clips, --clips asks for {args.clips}")
        print(f"clips: {len(made)} from {args.clips_dir}")
    else:
        made = generate_sample_clips(work / "clips", args.clips, seconds=args.seconds, width=width,
                                     height=height, speech=False)
        print(f"clips: {len(made)} x {args.seconds:g} s {width}x{height} H.264 + AAC tone, generated in "
              f"{time.perf_counter() - started:.1f} s")
    clips = [ClipInput(f"clip{i}", c.path, c.transcript) for i, c in enumerate(made)]

    build_times: dict[str, float] = {}
    built_params: int | None = None
    if args.model:
        model_dir, source = args.model, f"{args.model}"
    elif args.random_init:
        if device.type != "cuda":
            warnings.warn(f"--random-init {args.random_init} on CPU: fp32, several GiB of RAM and disk, and "
                          "slow; CPU numbers say nothing about GPU throughput", stacklevel=1)
        model_dir, built_params, build_times = build_random_internvl(
            args.random_init, work / args.random_init, device=device, transcripts=[c.transcript for c in clips])
        source = (f"{args.random_init} architecture, RANDOM weights, built on {device} and saved to "
                  f"{model_dir}, loaded back by InternVLBackend")
    else:
        from ml.testing.tiny import build

        model_dir = build(args.backend, work / f"tiny-{args.backend}")
        source = f"tiny random {args.backend} (ml.testing), built in {model_dir}"

    started = time.perf_counter()
    if args.backend == "internvl":
        from ml.backends.internvl import InternVLBackend

        backend = InternVLBackend(str(model_dir), num_frames=args.frames, device=str(device),
                                  max_new_tokens=args.max_new_tokens, batch_size=batch_sizes[0])
        model, dtype = backend.base_model, backend.dtype
        frames, per_frame = args.frames, backend.image_tokens_per_frame
    else:
        from ml.backends.affectgpt import AffectGPTBackend

        checkpoint = args.checkpoint or (Path(model_dir) / "checkpoint.pth")
        backend = AffectGPTBackend(model_dir, checkpoint=checkpoint if checkpoint.is_file() else None,
                                   device=str(device), max_new_tokens=args.max_new_tokens,
                                   batch_size=batch_sizes[0])
        model = backend.model
        dtype = next(backend.model.llama_model.parameters()).dtype
        frames, per_frame = backend.config.num_frames, None
        if args.frames != frames:
            print(f"note: AffectGPT always samples {frames} frames (its config); --frames ignored")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    build_times["load_s"] = time.perf_counter() - started
    n_params = count_parameters(model)
    if built_params is not None and built_params != n_params:
        print(f"warning: built {built_params:,} parameters, loaded {n_params:,}")

    if not args.natural_stop:
        force_new_tokens(backend, args.backend, args.max_new_tokens)
    counters = instrument(backend, args.backend, device)
    monitor = GpuMonitor(device)

    print(f"backend: {args.backend}   model: {source}")
    print(f"parameters: {n_params:,} ({n_params / 1e9:.3f} B)   device: {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}   dtype: {dtype}"
          f"   torch {torch.__version__}, {torch.get_num_threads()} CPU threads of {os.cpu_count()} cores")
    if build_times:
        print("model times: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in build_times.items()))
    print(f"frames/clip: {frames}   image tokens/frame: {per_frame if per_frame is not None else 'n/a'}   "
          f"new tokens: {'natural stop, at most' if args.natural_stop else 'forced'} {args.max_new_tokens}   "
          f"warm-up batches: {args.warmup}   timed passes: {args.repeats}")
    print(f"GPU utilisation: {monitor.how}")
    if 1 not in args.batch_sizes:
        print("note: batch size 1 added as the baseline")

    rows: list[Row] = []
    first: dict[int, Row] = {}  # readers -> its batch-1 row
    for size in batch_sizes:
        one_reader = None
        for workers in args.decode_workers:
            set_decode_workers(backend, args.backend, workers)
            row = measure(backend, clips, counters, monitor, device, size, warmup=args.warmup, repeats=args.repeats)
            row.decode_workers = workers
            row.speedup_vs_b1 = row.clips_per_s / first.setdefault(workers, row).clips_per_s
            if workers == 1:
                one_reader = row
            if one_reader is not None:
                row.speedup_vs_one_reader = row.clips_per_s / one_reader.clips_per_s
            rows.append(row)
            print(f"  batch {size}, {workers} reader{'s' if workers > 1 else ''}: {row.clips_per_s:.3f} clips/s",
                  flush=True)
    print()
    print(format_table(rows, monitor))
    print(f"\nvs b1 = clips/s at that batch size / clips/s at batch size 1 with as many readers, same run; "
          f"vs 1 reader = clips/s / clips/s with 1 reader at that batch size. {len(clips)} clips per pass"
          + (f"; batches not dividing {len(clips)} end with a short batch" if any(len(clips) % b for b in
                                                                                      batch_sizes) else ""))
    if args.json:
        args.json.write_text(json.dumps({
            "backend": args.backend, "model": source, "parameters": n_params, "device": str(device),
            "dtype": str(dtype), "clips": len(clips), "frames": frames, "image_tokens_per_frame": per_frame,
            "max_new_tokens": args.max_new_tokens, "forced_new_tokens": not args.natural_stop,
            "gpu_util_source": monitor.how, "model_times_s": build_times,
            "rows": [asdict(r) for r in rows]}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
