"""python manage.py demo: the whole learning loop, offline, in a few minutes on a CPU (`make demo`, issue 10 item 9).

Into the data dir it is run against (AFFECTLOOP_DATA_DIR; the models in AFFECTLOOP_MODEL_DIR), it:

1. generates colour clips (ml.testing.samples.generate_colour_clips: the colour tells the emotion) with a
   manifest of transcripts, and imports them into a "Demo" project through `import_clips` (the real ingest
   path: validation, storage, the media task);
2. saves a tiny random InternVL (56-px frames) into the model dir as `tiny56` and makes it the project's
   InternVL model (config.prelabel), which registers and pre-labels every clip;
3. verifies most clips (a demo annotator annotates, a demo reviewer accepts, through the services), leaving
   a few training-split clips unlabeled;
4. starts a retraining (training.start_run), which LoRA-trains the base on the verified clips, evaluates the
   candidate on the held-out test clips and auto-promotes it (config.training.auto_promote); should the rule
   not promote it, the demo promotes it through the registry and says so;
5. the promotion queues the unlabeled clips again: they are pre-labeled with the promoted adapter.

No worker runs: Celery is switched to eager mode in this process, so every task the services send (the media
task, registration, pre-labeling, the training run) runs here, in order, as the test suite runs them. torch
uses one thread. The last line printed is the command that opens the result.

Re-running on the same data dir reuses a finished demo (prints it again); an unfinished one (an interrupted
run) is refused with the command that clears the dir.
"""

from __future__ import annotations

import csv
import os
import secrets
import tempfile
import time
from io import StringIO
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

PROJECT = "Demo"
BASE = "tiny56"
# The colour task that a tiny InternVL learns on a CPU in about half a minute (tests/annotations/
# test_evaluation.py, tests/integration/test_learning_loop.py); a larger test share than the default so that
# the evaluation has enough held-out clips to promote by the rule.
TRAINING = {"base_model": BASE, "lora_rank": 8, "learning_rate": 5e-3, "batch_size": 8, "grad_accum": 1,
            "epochs": 20, "num_frames": 4, "auto_promote": True, "promote_margin": 0.2, "min_test_clips": 4,
            "split": {"train": 0.6, "val": 0.1, "test": 0.3}}
PRELABEL = {"backends": {"internvl": {"model": BASE, "num_frames": 4}}, "batch_size": 8}
WORKER_OPTIONS = {"num_workers": 0, "max_new_tokens": 12, "log_every": 10, "eval_every": 80}
LOGINS = "demo-logins.txt"


class Command(BaseCommand):
    help = ("Build a demo project in this data dir: sample clips, a tiny InternVL pre-labeling them, verified "
            "labels, a retraining that is evaluated and promoted, and new pre-labels from it. Offline, CPU.")

    def add_arguments(self, parser):
        parser.add_argument("--clips", type=int, default=60, help="sample clips to generate (default 60)")
        parser.add_argument("--unlabeled", type=int, default=8,
                            help="training-split clips left unlabeled for the new model (default 8)")
        parser.add_argument("--seed", type=int, default=7)

    # --- output -----------------------------------------------------------------------------------
    def step(self, message: str) -> None:
        self.stdout.write(f"[demo {time.monotonic() - self.t0:6.1f}s] {message}")
        self.stdout.flush()

    def open_line(self) -> str:
        return f"make run AFFECTLOOP_DATA_DIR={settings.DATA_DIR}"

    # --- the loop ---------------------------------------------------------------------------------
    def handle(self, *args, clips, unlabeled, seed, **options):
        from annotations import selectors
        from annotations.models import ModelVersion, TrainingRun

        self.t0 = time.monotonic()
        if clips < 20 or not 0 <= unlabeled < clips // 2:
            raise CommandError("--clips must be at least 20 and --unlabeled below half of it")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import peft  # noqa: F401
            import torch
        except ImportError as exc:
            raise CommandError(f"the demo trains a model: install the ml extra (make venv) ({exc})") from None

        existing = selectors.project_by_ref(PROJECT)
        if existing is not None:
            active = ModelVersion.objects.filter(project=existing, backend="internvl", status="active").first()
            if active is not None and active.adapter_path and TrainingRun.objects.filter(
                    project=existing, status="succeeded").exists():
                self.step(f"the {PROJECT} project is already built in {settings.DATA_DIR}: reusing it "
                          f"(active model {active.name}; logins in {Path(settings.DATA_DIR) / LOGINS})")
                self.summary(existing)
                self.stdout.write(self.open_line())
                return
            raise CommandError(f"an unfinished {PROJECT} project is in {settings.DATA_DIR} (an interrupted demo?): "
                               f"remove that data dir (make clean-data AFFECTLOOP_DATA_DIR={settings.DATA_DIR}) "
                               f"and run make demo again")

        import logging

        from config.celery import app

        logging.getLogger("celery.app.trace").setLevel(logging.WARNING)  # one line per task: too many here
        torch.set_num_threads(1)  # tiny operations: more threads only wait
        app.conf.task_always_eager = True  # every task the services send runs here, in order
        app.conf.task_eager_propagates = True
        settings.TRAINING_WORKER_OPTIONS = {**WORKER_OPTIONS, **(getattr(settings, "TRAINING_WORKER_OPTIONS", {})
                                                                  or {})}
        people = self.people()
        project = self.import_clips(people, clips, seed)
        self.prelabel_with_base(project, people)
        self.verify(project, people, unlabeled)
        _run, candidate = self.retrain(project, people)
        self.prelabel_with_adapter(project, candidate, unlabeled)
        self.summary(project)
        self.stdout.write(f"done in {time.monotonic() - self.t0:.0f} s. Open it with:")
        self.stdout.write(self.open_line())

    def people(self) -> dict:
        User = get_user_model()
        admin = User.objects.filter(is_superuser=True).order_by("pk").first()
        if admin is None:
            raise CommandError("no admin login: run `python manage.py bootstrap` first (make demo does)")
        people = {"manager": admin}
        lines = []
        for key, username in (("annotator", "demo-annotator"), ("reviewer", "demo-reviewer")):
            password = secrets.token_urlsafe(9)
            user = User.objects.filter(username=username).first()
            if user is None:
                user = User.objects.create_user(username, password=password)
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
            people[key] = user
            lines.append(f"{username} / {password}")
        path = Path(settings.DATA_DIR) / LOGINS
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        self.step(f"demo logins (also in {path}): {'; '.join(lines)}; manager: {admin.get_username()} "
                  f"(the bootstrap admin)")
        return people

    def import_clips(self, people: dict, count: int, seed: int):
        from annotations.models import Clip, Role
        from annotations.services import projects
        from ml.testing.samples import generate_colour_clips

        project = projects.create_project(name=PROJECT, creator=people["manager"],
                                          description="Colour clips: the colour tells the emotion (make demo).")
        projects.set_membership(project=project, user=people["annotator"], role=Role.ANNOTATOR,
                                actor=people["manager"])
        projects.set_membership(project=project, user=people["reviewer"], role=Role.REVIEWER,
                                actor=people["manager"])
        projects.update_config(project, {"training": TRAINING}, actor=people["manager"])
        self.step(f"project {PROJECT!r} created; training config: {TRAINING}")

        with tempfile.TemporaryDirectory(prefix="demo-clips-", dir=settings.DATA_DIR) as tmp:
            videos = generate_colour_clips(tmp, count, seed=seed, workers=2)
            manifest = Path(tmp) / "manifest.csv"
            with open(manifest, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["path", "transcript", "language"])
                for video in videos:
                    writer.writerow([video.path.name, video.transcript or "Hello there.", video.language])
            self.step(f"generated {len(videos)} colour clips; importing them with import_clips")
            out, err = StringIO(), StringIO()
            try:
                call_command("import_clips", str(manifest), project=PROJECT,
                             user=people["manager"].get_username(), stdout=out, stderr=err)
            except SystemExit:
                raise CommandError(f"import_clips rejected clips:\n{out.getvalue()}{err.getvalue()}") from None
        ready = project.clips.filter(status=Clip.Status.READY)
        splits = {s: ready.filter(split=s).count() for s in ("train", "val", "test")}
        self.step(f"import: {err.getvalue().strip()}; {ready.count()} clips ready; splits {splits}")
        if ready.count() != count:
            raise CommandError(f"only {ready.count()} of {count} clips became ready: "
                               f"{list(project.clips.exclude(status=Clip.Status.READY).values_list('error', flat=True))}")
        return project

    def prelabel_with_base(self, project, people):
        from annotations.models import ModelVersion, Prediction
        from annotations.services import prelabel, projects
        from ml.testing.tiny_internvl import build_tiny_internvl

        model_dir = Path(settings.MODEL_DIR)
        model_dir.mkdir(parents=True, exist_ok=True)
        if not (model_dir / BASE).exists():
            build_tiny_internvl(model_dir / BASE, image_size=56)
        self.step(f"saved a tiny random InternVL as {model_dir / BASE}; configuring it as the InternVL model")
        # The change of config.prelabel registers the model and queues the clips (run here, eagerly).
        projects.update_config(project, {**project.config, "prelabel": PRELABEL}, actor=people["manager"])
        total = project.clips.count()
        for _ in range(3):
            if Prediction.objects.filter(clip__project=project, backend="fused").count() >= total:
                break
            prelabel.enqueue_prelabel(project)
        fused = Prediction.objects.filter(clip__project=project, backend="fused").count()
        base = ModelVersion.objects.filter(project=project, backend="internvl", status="active").first()
        errors = set(project.clips.exclude(prelabel_error="").values_list("prelabel_error", flat=True))
        if base is None or fused < total:
            raise CommandError(f"pre-labeling with the base failed: {fused}/{total} fused; errors {errors}")
        self.step(f"registered {base.name}; pre-labeled {fused}/{total} clips with it")

    def verify(self, project, people, unlabeled: int):
        from annotations.models import Clip
        from annotations.services import annotating, queue, reviews

        clips = list(project.clips.filter(status=Clip.Status.READY).order_by("pk"))
        left = {c.pk for c in [c for c in clips if c.split == "train"][:unlabeled]}
        truth = self.truth(project)
        done = 0
        for clip in clips:
            if clip.pk in left:
                continue
            queue.claim(people["annotator"], clip)
            draft = annotating.start(people["annotator"], clip)
            annotation = annotating.submit(draft, labels=[truth[clip.pk]], base_version=draft.version)
            reviews.review(annotation, reviewer=people["reviewer"], decision="accept")
            done += 1
        self.left = sorted(left)
        self.step(f"verified {done} clips (annotated by demo-annotator, accepted by demo-reviewer); "
                  f"{len(left)} training clips left unlabeled")

    def truth(self, project) -> dict[int, str]:
        """Each clip's emotion, from its generated file name (colour_<seed>_<i>.mp4: emotion i mod k)."""
        from ml.testing.samples import COLOUR_EMOTIONS

        names = list(COLOUR_EMOTIONS)
        out = {}
        for clip in project.clips.all():
            stem = Path(clip.original_name or clip.name).stem
            out[clip.pk] = names[int(stem.rsplit("_", 1)[1]) % len(names)]
        return out

    def retrain(self, project, people):
        from annotations.models import ModelVersion, TrainingRun
        from annotations.services import registry, training

        started = time.monotonic()
        self.step("starting a retraining (training.start_run; the run executes here)")
        run = training.start_run(project, actor=people["manager"])
        run.refresh_from_db()
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"training run {run.pk} ended {run.status}: {run.error}\n{run.log[-3000:]}")
        candidate = ModelVersion.objects.get(training_run=run)
        result = candidate.metrics.get("evaluation", {})
        self.step(f"run {run.pk} succeeded in {time.monotonic() - started:.0f} s on snapshot "
                  f"{run.snapshot.name} {run.snapshot.split_counts}; test F: base "
                  f"{result.get('base', {}).get('f', 0):.2f} -> candidate {result.get('candidate', {}).get('f', 0):.2f}"
                  f" on {result.get('n')} clips")
        candidate.refresh_from_db()
        if candidate.status == "active":
            self.step(f"auto-promoted {candidate.name} by the rule (margin {TRAINING['promote_margin']}, "
                      f"min_test_clips {TRAINING['min_test_clips']})")
        else:
            reasons = result.get("promotion", {}).get("reasons")
            registry.promote(candidate, actor=people["manager"])
            candidate.refresh_from_db()
            self.step(f"NOT auto-promoted ({reasons}); promoted {candidate.name} through the registry instead")
        return run, candidate

    def prelabel_with_adapter(self, project, candidate, unlabeled: int):
        from annotations.models import Prediction
        from annotations.services import prelabel
        from ml.versions import prediction_version

        version = prediction_version(candidate.name, PRELABEL["backends"]["internvl"]["num_frames"])

        def relabeled():
            return Prediction.objects.filter(clip_id__in=self.left, backend="internvl", model_version=version)

        if relabeled().count() < len(self.left):  # the promotion queued them; once more if it did not
            prelabel.enqueue_prelabel(project, force_ids=self.left)
        truth = self.truth(project)
        right = sum(truth[p.clip_id] in [label["term"] for label in p.labels] for p in relabeled())
        self.step(f"re-pre-labeled {relabeled().count()}/{len(self.left)} unlabeled clips with the promoted "
                  f"adapter; it names the colour's emotion on {right} of them")

    def summary(self, project) -> None:
        from annotations.models import ModelVersion, Prediction, TrainingRun

        versions = ", ".join(f"{v.name} ({v.status})" for v in
                             ModelVersion.objects.filter(project=project, backend="internvl").order_by("pk"))
        chips = Prediction.objects.filter(clip__project=project, backend="fused").values("clip_id").distinct().count()
        self.step(f"{project.clips.count()} clips, {chips} with model chips; runs: {list(TrainingRun.objects.filter(project=project).values_list('status', flat=True))}; "
                  f"InternVL versions: {versions}")
