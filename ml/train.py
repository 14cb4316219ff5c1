"""LoRA fine-tuning of InternVL on verified labels: the command line and the Python API.

    python -m ml.train --base MODEL_DIR --train TRAIN.jsonl --eval EVAL.jsonl --out ADAPTER_DIR
        [--captions CAPTIONS.jsonl --caption-ratio R] [--config FILE.json|.yaml]
        [--epochs N] [--lr X] [--lora-r R] [--batch-size B] [--seed S] [--<any setting> VALUE]
    torchrun --nproc_per_node N -m ml.train ...        several GPUs (or CPU processes) with DDP

A JSONL line is {"video": path, "transcript": text, "labels": [...]}; a captions line has "caption" in place
of "labels". Relative paths are resolved against the JSONL file's folder. Settings come from the defaults,
then --config, then the flags. OUT receives the adapter in peft's layout, training_config.json, metrics.json
and eval_predictions.jsonl; OUT/checkpoints lets the same command resume after a failure or Ctrl-C.

Progress goes out as a bar on a terminal and as plain lines otherwise; the last line of stdout is the final
evaluation as one JSON object. Exit status: 0 done, 2 bad input or settings, 130 stopped by a signal (a
checkpoint was saved), 1 any other failure; a failure's last line is a one-line error.

Worker-only, like everything under ml.training: the web process never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

from ml.training.checkpoints import ResumeError
from ml.training.config import ConfigError, TrainConfig
from ml.training.data import TrainingDataError
from ml.training.loop import Progress, TrainingStopped, train

__all__ = ["Progress", "TrainConfig", "TrainingStopped", "main", "train"]

# Short spellings of some settings (the command line); every setting also has --its-name.
ALIASES = {"base_model": "--base", "learning_rate": "--lr", "lora_rank": "--lora-r"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, type=Path, help="training samples (JSONL)")
    parser.add_argument("--eval", required=True, type=Path, help="evaluation samples (JSONL), not trained on")
    parser.add_argument("--out", required=True, type=Path, help="output folder: adapter and checkpoints")
    parser.add_argument("--captions", type=Path, help="caption samples (JSONL) to mix in by --caption-ratio")
    parser.add_argument("--config", type=Path, help="settings file, JSON or YAML; flags override it")
    group = parser.add_argument_group("settings (TrainConfig)")
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        flags = [ALIASES[f.name]] if f.name in ALIASES else []
        flags.append("--" + f.name.replace("_", "-"))
        hint, default = hints[f.name], f.default if f.default is not MISSING else None
        options = {"dest": f.name, "default": None, "help": f"{f.metadata['help']} (default: {default})"}
        if hint is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif get_origin(hint) is Literal:
            options["choices"] = get_args(hint)
        else:
            options["type"] = hint
        group.add_argument(*flags, **options)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    config = TrainConfig.from_dict(given, base=config, source="command line")
    if not config.base_model:
        raise ConfigError("no base model: give --base MODEL_DIR or base_model in --config")
    return config


class ProgressPrinter:
    """A bar when stdout is a terminal (evaluations printed above it), one plain line per report otherwise."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm  # comes with transformers

            self.bar = tqdm(unit="step", dynamic_ncols=True)

    def __call__(self, progress: Progress) -> None:
        line = format_progress(progress)
        if self.bar is None:
            print(line, file=self.stream, flush=True)
            return
        self.bar.total = progress.total_steps
        self.bar.update(progress.step - self.bar.n)
        self.bar.set_postfix(loss=f"{progress.loss:.4f}", lr=f"{progress.lr:.2e}")
        if progress.eval is not None:
            self.bar.write(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_progress(progress: Progress) -> str:
    line = (f"step {progress.step}/{progress.total_steps} epoch {progress.epoch} loss {progress.loss:.4f} "
            f"lr {progress.lr:.3g} {progress.elapsed_s:.1f}s")
    if progress.eval is not None:
        figures = {k: v for k, v in progress.eval.items() if k not in ("step", "epoch")}
        line += " | eval " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in figures.items())
    return line


def _stop_on_signals() -> threading.Event:
    """The first Ctrl-C or SIGTERM asks the loop to checkpoint and stop; a second one kills as usual."""
    stop = threading.Event()

    def handler(signum, frame) -> None:
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    return stop


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, only rank 0 talks
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    stop = _stop_on_signals()
    printer = ProgressPrinter() if main_process else None
    try:
        metrics = train(config, args.train, args.eval, args.out, captions_path=args.captions,
                        progress=printer, should_stop=stop.is_set)
    except (TrainingDataError, ConfigError, ResumeError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingStopped as exc:
        print(f"stopped: {_one_line(exc)}; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the traceback goes out, then the one-line error the issue asks for
        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if printer is not None:
            printer.close()
    if main_process:
        print(json.dumps(metrics["eval"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
