"""Evaluation of the adapter being trained, on the eval file.

Two kinds of figures: the eval loss (the training objective on the eval samples: mean cross-entropy per
answer token), and the labels the model generates through the production predict step
(`ml.backends.internvl.predict_prepared`: same prompt, frames, greedy decoding and label parsing as
pre-labeling), compared as sets with the gold labels after mapping both to the vocabulary's canonical terms:
exact match (the share of clips whose set is exactly right), and precision / recall / F from
`ml.metrics.vocabulary_scores` (term level; the emotion wheel needs research data, so it is not used here).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from ml.metrics import vocabulary_scores
from ml.types import ClipInput
from ml.vocabulary import Vocabulary

from .data import IGNORE_INDEX, Sample, TrainingDataset, Unreadable, collate_examples


def set_metrics(gold: Mapping[str, Sequence[str]], predicted: Mapping[str, Sequence[str]],
                vocabulary: Vocabulary | None = None) -> dict[str, float | int]:
    """Exact match, precision, recall and F of predicted label sets against gold, over the gold keys."""
    vocab = vocabulary or Vocabulary.default()

    def terms(words: Sequence[str]) -> set[str]:
        return {vocab.canonical(word) or " ".join(word.split()).lower() for word in words}

    exact = sum(terms(labels) == terms(predicted.get(key, ())) for key, labels in gold.items())
    scores = vocabulary_scores(gold, predicted, vocab, level="term")
    return {"exact_match": exact / len(gold) if gold else 0.0, "precision": scores.precision,
            "recall": scores.recall, "f": scores.f, "n": len(gold)}


def evaluate(model, inputs, samples: Sequence[Sample], *, devices, batch_size: int, max_new_tokens: int,
             num_workers: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(figures, one prediction record per sample). `model` is the bare peft model, not a DDP wrapper."""
    was_training = model.training
    model.eval()
    try:
        loss = eval_loss(model, inputs, samples, devices=devices, batch_size=batch_size,
                         num_workers=num_workers)
        predicted = generate_labels(model, inputs, samples, devices=devices, batch_size=batch_size,
                                    max_new_tokens=max_new_tokens)
    finally:
        model.train(was_training)
    gold = {sample.where: sample.labels for sample in samples}
    labels = {key: row["predicted"] for key, row in predicted.items()}
    figures = {"eval_loss": loss, **set_metrics(gold, labels)}
    records = [{"video": str(sample.video), "where": sample.where, "gold": list(sample.labels),
                **predicted[sample.where]} for sample in samples]
    return figures, records


def eval_loss(model, inputs, samples: Sequence[Sample], *, devices, batch_size: int,
              num_workers: int) -> float:
    import torch  # worker-only
    from torch.utils.data import DataLoader

    loader = DataLoader(TrainingDataset(inputs, samples), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=functools.partial(collate_examples, pad_id=inputs.pad_id))
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            if isinstance(batch, Unreadable):
                raise batch.error()
            batch = devices.put(batch)
            with devices.autocast():
                loss = model(**batch).loss
            # The model averages over the batch's answer tokens; weigh batches by their token counts.
            count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total, tokens = total + float(loss) * count, tokens + count
    return total / tokens


def generate_labels(model, inputs, samples: Sequence[Sample], *, devices, batch_size: int,
                    max_new_tokens: int) -> dict[str, dict[str, Any]]:
    """sample.where -> {"predicted": canonical terms, "raw_text": the answer}, as pre-labeling answers."""
    from ml.backends.internvl import predict_prepared  # worker-only: imports torch

    out = {}
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        clips = [ClipInput(sample.where, sample.video, sample.transcript) for sample in chunk]
        batch = inputs.prepare(clips)
        if batch.errors:
            index, reason = next(iter(batch.errors.items()))
            raise chunk[index].problem(reason)
        batch.inputs = batch.inputs.to(devices.device, dtype=devices.dtype)
        predictions = predict_prepared(model, inputs.tokenizer, clips, batch, version="in-training",
                                       max_new_tokens=max_new_tokens)
        for prediction in predictions:
            out[prediction.clip_id] = {"predicted": [label.term for label in prediction.labels],
                                       "raw_text": prediction.raw_text}
    return out
