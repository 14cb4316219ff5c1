"""LoRA fine-tuning of InternVL, split into the standard jobs: `config` (what to train), `data` (JSONL →
samples → model inputs, and the collate function), `devices` (CPU, GPU or DDP; precision), `loop` (optimiser,
schedule, early stopping, resume), `evaluation` (eval loss and generated-label set metrics), `checkpoints`
(resumable state and the final adapter layout).

The entry point is `python -m ml.train` / `ml.train.train`; only training workers and the command line use it.
The modules import torch, transformers and peft inside their functions, never at import: every ml module but a
listed few must import light (tests/ml/test_boundaries.py), and `TrainConfig` can be built without torch.
"""
