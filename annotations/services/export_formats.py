"""The per-format writers of services.exports, and the dataset card every export carries.

A writer gets rows one at a time, already in clip-name order, and keeps only what a format needs between
rows (open files, a pyarrow buffer of one row group, counters): memory stays flat with the number of clips.
Every text file is UTF-8 with "\\n" endings and nothing time-dependent, so the same rows give the same bytes.

A row is a dict: the snapshot item's fields (name, sha256, transcript, labels, terms, families, split,
annotator_ids, reviewer_ids, predictions), for a writer with CLIP_FIELDS the clip's current metadata
(duration, fps, width, height, has_audio, language, size_bytes, metadata), and `video`: the path written
into the data (relative to the export folder when the media is included, absolute otherwise).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from ml.prompts import internvl_answer, internvl_user_text

SPLITS = ("train", "val", "test")
TOP = 20  # terms and families listed in the card


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _text(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w", encoding="utf-8", newline="\n")


class Writer:
    """One format: `add` each row in order, then `close` returns the data files it wrote (relative)."""

    def __init__(self, folder: Path, options: dict):
        self.folder = folder
        self.options = options

    def add(self, row: dict) -> None:
        raise NotImplementedError

    def close(self) -> list[str]:
        raise NotImplementedError


class MerovCsv(Writer):
    """`name,openset`: the MER-OV challenge's CSV, openset the Python repr of the label list."""

    FILE = "merov.csv"

    def __init__(self, folder, options):
        super().__init__(folder, options)
        self.handle = _text(folder / self.FILE)
        self.csv = csv.writer(self.handle, lineterminator="\n")
        self.csv.writerow(["name", "openset"])

    def add(self, row):
        self.csv.writerow([row["name"], repr([str(label) for label in row["labels"]])])

    def close(self):
        self.handle.close()
        return [self.FILE]


class _PerSplitJsonl(Writer):
    """train.jsonl, val.jsonl, test.jsonl (each always present, empty when its split is), one line a row."""

    def __init__(self, folder, options):
        super().__init__(folder, options)
        self.handles = {split: _text(folder / f"{split}.jsonl") for split in SPLITS}

    def line(self, row: dict) -> dict:
        raise NotImplementedError

    def add(self, row):
        self.handles[row["split"]].write(json.dumps(self.line(row), ensure_ascii=False) + "\n")

    def close(self):
        for handle in self.handles.values():
            handle.close()
        return [f"{split}.jsonl" for split in SPLITS]


class TrainJsonl(_PerSplitJsonl):
    """Exactly what ml.training.data.read_samples reads (and snapshots.write_jsonl writes)."""

    def line(self, row):
        return {"video": row["video"], "transcript": row["transcript"], "labels": list(row["labels"])}


class InternVLJsonl(_PerSplitJsonl):
    """InternVL's fine-tuning format: a `<video>` human turn with the prompt our InternVL backend asks (the
    transcript and ml.prompts.INTERNVL_INSTRUCTION), the answer LoRA training teaches (a JSON list). The
    meta.json names the splits as InternVL's training script expects (root: the export folder)."""

    def line(self, row):
        return {"id": row["name"], "video": row["video"],
                "conversations": [{"from": "human", "value": "<video>\n" + internvl_user_text(row["transcript"])},
                                  {"from": "gpt", "value": internvl_answer(row["labels"])}]}

    def __init__(self, folder, options):
        super().__init__(folder, options)
        self.counts = Counter()

    def add(self, row):
        super().add(row)
        self.counts[row["split"]] += 1

    def close(self):
        files = super().close()
        meta = {f"affectloop_{split}": {"root": ".", "annotation": f"{split}.jsonl", "data_augment": False,
                                        "repeat_time": 1, "length": self.counts[split]} for split in SPLITS}
        with _text(self.folder / "meta.json") as handle:
            handle.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return [*files, "meta.json"]


class SwiftJsonl(_PerSplitJsonl):
    """ms-swift's multimodal format: `messages` with a `<video>` tag in the user turn, and `videos`."""

    def line(self, row):
        return {"messages": [{"role": "user", "content": "<video>" + internvl_user_text(row["transcript"])},
                             {"role": "assistant", "content": internvl_answer(row["labels"])}],
                "videos": [row["video"]]}


class Parquet(Writer):
    """data/<split>-00000-of-00001.parquet (the Hugging Face hub's layout, which datasets maps to splits),
    one row per clip, written with pyarrow a row group at a time. A split without clips has no file."""

    ROW_GROUP = 2000
    CLIP_FIELDS = True  # duration, fps, size, language, metadata: read for this format only

    def __init__(self, folder, options):
        import pyarrow as pa  # the web process never needs pyarrow unless it builds an export

        super().__init__(folder, options)
        self.pa = pa
        person = pa.string() if options.get("pseudonymise") else pa.int64()
        label = pa.struct([("term", pa.string()), ("score", pa.float64()), ("source", pa.string())])
        self.schema = pa.schema([
            ("name", pa.string()), ("sha256", pa.string()), ("split", pa.string()), ("video", pa.string()),
            ("transcript", pa.string()), ("labels", pa.list_(pa.string())), ("terms", pa.list_(pa.string())),
            ("families", pa.list_(pa.string())), ("duration", pa.float64()), ("fps", pa.float64()),
            ("width", pa.int32()), ("height", pa.int32()), ("has_audio", pa.bool_()), ("language", pa.string()),
            ("size_bytes", pa.int64()), ("metadata", pa.string()),
            ("annotator_ids", pa.list_(person)), ("reviewer_ids", pa.list_(person)),
            ("predictions", pa.list_(pa.struct([("backend", pa.string()), ("model_version", pa.string()),
                                                 ("labels", pa.list_(label))]))),
        ])
        self.buffers: dict[str, list[dict]] = {split: [] for split in SPLITS}
        self.writers = {}

    @staticmethod
    def _score(value):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def add(self, row):
        predictions = [{"backend": str(p.get("backend", "")), "model_version": str(p.get("model_version", "")),
                        "labels": [{"term": str(label.get("term", "")), "score": self._score(label.get("score")),
                                    "source": str(label.get("source", ""))}
                                   for label in p.get("labels") or [] if isinstance(label, dict)]}
                       for p in row["predictions"] if isinstance(p, dict)]
        record = {name: row.get(name) for name in self.schema.names}
        record["metadata"] = _dumps(row.get("metadata") or {})
        record["predictions"] = predictions
        buffer = self.buffers[row["split"]]
        buffer.append(record)
        if len(buffer) >= self.ROW_GROUP:
            self._flush(row["split"])

    def _flush(self, split):
        import pyarrow.parquet as pq

        rows = self.buffers[split]
        if not rows:
            return
        if split not in self.writers:
            path = self.folder / "data" / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writers[split] = pq.ParquetWriter(path, self.schema, compression="snappy")
        self.writers[split].write_table(self.pa.Table.from_pylist(rows, schema=self.schema))
        self.buffers[split] = []

    def close(self):
        for split in SPLITS:
            self._flush(split)
        for writer in self.writers.values():
            writer.close()
        return [f"data/{split}-00000-of-00001.parquet" for split in SPLITS if split in self.writers]


class LabelStudioJson(Writer):
    """tasks.json: a JSON list of Label Studio tasks (data: video, transcript, name), the verified labels as
    an annotation and each model's labels as a prediction (model_version, score: the mean label score), both
    as results of a Taxonomy control named `emotions` on the video; label_config.xml is the matching
    labelling config (its choices: every label that occurs)."""

    FILE = "tasks.json"

    def __init__(self, folder, options):
        super().__init__(folder, options)
        self.handle = _text(folder / self.FILE)
        self.handle.write("[")
        self.first = True
        self.choices: set[str] = set()

    @staticmethod
    def _result(labels) -> list[dict]:
        if not labels:
            return []
        return [{"from_name": "emotions", "to_name": "video", "type": "taxonomy",
                 "value": {"taxonomy": [[label] for label in labels]}}]

    def add(self, row):
        predictions = []
        for p in row["predictions"]:
            terms = [str(label.get("term")) for label in p.get("labels") or [] if isinstance(label, dict)
                     and label.get("term")]
            scores = [label["score"] for label in p.get("labels") or [] if isinstance(label, dict)
                      and isinstance(label.get("score"), (int, float))]
            self.choices.update(terms)
            predictions.append({"model_version": str(p.get("model_version", "")),
                                "score": round(sum(scores) / len(scores), 6) if scores else None,
                                "result": self._result(terms)})
        self.choices.update(row["labels"])
        task = {"data": {"video": row["video"], "transcript": row["transcript"], "name": row["name"]},
                "annotations": [{"result": self._result(list(row["labels"]))}],
                "predictions": predictions}
        self.handle.write(("\n" if self.first else ",\n") + json.dumps(task, ensure_ascii=False, sort_keys=True))
        self.first = False

    def close(self):
        self.handle.write("\n]\n")
        self.handle.close()
        from xml.sax.saxutils import quoteattr

        choices = "".join(f"    <Choice value={quoteattr(c)}/>\n" for c in sorted(self.choices))
        with _text(self.folder / "label_config.xml") as handle:
            handle.write('<View>\n  <Video name="video" value="$video"/>\n  <Text name="transcript" '
                         'value="$transcript"/>\n  <Taxonomy name="emotions" toName="video">\n'
                         f"{choices}  </Taxonomy>\n</View>\n")
        return [self.FILE, "label_config.xml"]


WRITERS = {"merov_csv": MerovCsv, "train_jsonl": TrainJsonl, "internvl_jsonl": InternVLJsonl,
           "swift_jsonl": SwiftJsonl, "parquet": Parquet, "label_studio": LabelStudioJson}


# --- the dataset card -------------------------------------------------------------------------------------
class Card:
    """Counts gathered row by row, then README.md: nothing in it depends on when it was written."""

    def __init__(self):
        self.rows = 0
        self.splits = Counter()
        self.terms = Counter()
        self.families = Counter()
        self.models = Counter()
        self.reviewed = 0
        self.trusted = 0

    def add(self, row: dict) -> None:
        self.rows += 1
        self.splits[row["split"]] += 1
        self.terms.update(set(row["terms"]))
        self.families.update(set(row["families"]))
        self.models.update({(str(p.get("backend", "")), str(p.get("model_version", "")))
                            for p in row["predictions"] if isinstance(p, dict)})
        # A trusted annotator's submit is recorded as the annotator's own accept (services.reviews).
        if row["reviewer_ids"] and set(row["reviewer_ids"]) <= set(row["annotator_ids"]):
            self.trusted += 1
        else:
            self.reviewed += 1

    @staticmethod
    def _top(counter: Counter) -> list[tuple[str, int]]:
        return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:TOP]

    def render(self, *, snapshot, format_name: str, format_label: str, options: dict, files: list[str]) -> str:
        filters = options["filters"]
        lines = [
            f"# {snapshot.name}", "",
            (f"Verified emotion labels for short video clips, exported by Affectloop from the project "
             f"“{snapshot.project.name}” as {format_label} (`{format_name}`)."), "",
            "| | |", "| --- | --- |",
            f"| snapshot | `{snapshot.name}` |",
            f"| snapshot content hash | `{snapshot.content_hash}` |",
            f"| vocabulary version | {snapshot.vocabulary_version} |",
            f"| clips | {self.rows} |",
            f"| media | {'included under media/' if options['media'] == 'include' else 'linked (absolute paths)'} |",
            f"| people | {'pseudonymised ids (keyed hash)' if options['pseudonymise'] else 'user ids'} |",
            f"| filters | {', '.join(f'{k}={v}' for k, v in filters.items()) if filters else 'none'} |",
            "", "## Splits", "", "| split | clips |", "| --- | --- |",
            *(f"| {split} | {self.splits[split]} |" for split in SPLITS), "",
            "Splits come from the snapshot: a hash of each clip's key, so a clip keeps its split across snapshots.",
            "", "## Label distribution", "",
            f"Clips carrying each canonical term (top {TOP}):", "", "| term | clips |", "| --- | --- |",
            *(f"| {term} | {n} |" for term, n in self._top(self.terms)), "",
            f"Clips carrying each family (top {TOP}):", "", "| family | clips |", "| --- | --- |",
            *(f"| {family} | {n} |" for family, n in self._top(self.families)), "",
            "## How the labels were verified", "",
            ("A clip is verified when the latest review of its annotations accepted them or fixed them (the "
             "reviewer's labels then count), or when a manager had marked its annotator trusted (the submit "
             "counts as accepted). The labels are the verified words in the annotator's order."), "",
            f"- {self.reviewed} clips verified by a reviewer", f"- {self.trusted} clips by a trusted annotator", "",
            "## Models that pre-labelled", "",
        ]
        if self.models:
            lines += ["Model suggestions the annotators were shown (none on blind clips):", "",
                      "| backend | model version | clips |", "| --- | --- | --- |",
                      *(f"| {b} | `{v}` | {n} |" for (b, v), n in sorted(self.models.items()))]
        else:
            lines.append("None: the annotators saw no model suggestions.")
        if snapshot.erased_count:
            lines += ["", "## Erasures", "",
                      (f"{snapshot.erased_count} clips were erased on request after the snapshot was frozen; "
                       "this export leaves them out.")]
        lines += ["", "## Files", "", *(f"- `{name}`" for name in [*files, "README.md"])]
        return "\n".join(lines) + "\n"
