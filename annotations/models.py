"""The data model of the whole product.

Rules that matter are constraints in the database (unique clip per project by content, one prediction per
clip and model version, one annotation per clip and annotator, one active model per project and backend,
one live training run per project), so that retried tasks and double submits cannot create duplicates.
State changes live in services; these classes only describe the data.
"""

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q


class Role(models.TextChoices):
    ANNOTATOR = "annotator", "Annotator"
    REVIEWER = "reviewer", "Reviewer"
    MANAGER = "manager", "Manager"


# Higher roles can do everything lower roles can.
ROLE_RANK = {Role.ANNOTATOR: 1, Role.REVIEWER: 2, Role.MANAGER: 3}


class Project(models.Model):
    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    # Typed and validated by annotations.project_config; read it only through project_config(project).
    config = models.JSONField(default=dict, blank=True)
    # Bumped by every vocabulary change, so caches and stored agreement figures know they are stale.
    vocabulary_version = models.PositiveIntegerField(default=1)
    # The verified pool's size when the queue priorities were last scored (novelty is measured against it).
    scored_pool_size = models.PositiveIntegerField(default=0)
    archived = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    # A trusted annotator's submissions count as verified without review (DESIGN: "marked trusted").
    trusted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user_per_project"),
            models.CheckConstraint(condition=Q(role__in=["annotator", "reviewer", "manager"]), name="membership_role_valid"),
        ]

    def __str__(self):
        return f"{self.user} @ {self.project} ({self.role})"

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


class DashboardFigures(models.Model):
    """The dashboard's costly figures for one project, computed by a beat task (services.dashboard), so
    that the page reads one row however many clips the project has."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="dashboard_figures")
    data = models.JSONField(default=dict)
    computed_at = models.DateTimeField()
    seconds = models.FloatField(default=0.0, help_text="How long the computation took")

    def __str__(self):
        return f"dashboard figures of {self.project} at {self.computed_at:%Y-%m-%d %H:%M}"


class Clip(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"          # stored, waiting for the media task
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class LabelState(models.TextChoices):
        UNLABELED = "unlabeled", "Unlabeled"
        PRELABELED = "prelabeled", "Pre-labeled"
        IN_PROGRESS = "in_progress", "In progress"
        SUBMITTED = "submitted", "Submitted"
        VERIFIED = "verified", "Verified"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="clips")
    file = models.FileField(upload_to="clips/", max_length=300)
    thumbnail = models.FileField(upload_to="thumbs/", max_length=300, blank=True)
    original_name = models.CharField(max_length=300, help_text="File name or manifest path it came from")
    # The stable name exports, prediction imports, erasure and reports use: the path relative to the import
    # root (or the upload's file name) without its extension; unique per project.
    name = models.CharField(max_length=300)
    source = models.CharField(max_length=32, default="upload", help_text="upload | import:folder | import:csv")
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField(validators=[MinValueValidator(1)])
    container = models.CharField(max_length=16, blank=True)
    duration = models.FloatField(null=True, blank=True, help_text="seconds")
    fps = models.FloatField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    video_codec = models.CharField(max_length=32, blank=True)
    audio_codec = models.CharField(max_length=32, blank=True)
    has_audio = models.BooleanField(null=True)
    transcript = models.TextField(blank=True)
    language = models.CharField(max_length=16, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    label_state = models.CharField(max_length=16, choices=LabelState.choices, default=LabelState.UNLABELED,
                                   db_index=True)
    error = models.TextField(blank=True)
    # Active-learning priority (higher = annotate sooner) and the signals behind it; set after pre-labeling.
    priority = models.FloatField(null=True, blank=True, db_index=True)
    al_signals = models.JSONField(default=dict, blank=True)
    # Kept for filtering at scale (services.clip_index): the split by the one rule, and the backends'
    # disagreement from al_signals.
    split = models.CharField(max_length=5, blank=True, db_index=True)
    disagreement = models.FloatField(null=True, blank=True)
    prelabel_queued_at = models.DateTimeField(null=True, blank=True)
    prelabel_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    # A manager sent the clip to review (the clip list's action): its submissions so far go to reviewers
    # without waiting for the overlap, and a verified clip gets a human second look. Met once a human
    # review is recorded after this time (services.queue.review_candidates).
    review_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "sha256"], name="clip_unique_content_per_project"),
            models.UniqueConstraint(fields=["project", "name"], name="clip_unique_name_per_project"),
            models.CheckConstraint(condition=~Q(name=""), name="clip_name_nonempty"),
            models.CheckConstraint(condition=Q(size_bytes__gt=0), name="clip_size_positive"),
            models.CheckConstraint(condition=Q(status__in=["pending", "processing", "ready", "failed"]), name="clip_status_valid"),
            models.CheckConstraint(condition=Q(label_state__in=["unlabeled", "prelabeled", "in_progress", "submitted",
                                                               "verified"]),
                                   name="clip_label_state_valid"),
            models.CheckConstraint(condition=Q(duration__isnull=True) | Q(duration__gt=0),
                                   name="clip_duration_positive"),
            models.CheckConstraint(condition=~Q(status="ready") | Q(duration__isnull=False),
                                   name="clip_ready_has_duration"),
        ]
        # The queue's order, priority DESC NULLS LAST then id, has its index in migration 0008: SQLite
        # accepts no NULLS LAST in an index (its DESC already puts NULLs last), PostgreSQL needs it.
        indexes = [models.Index(fields=["project", "status", "label_state"])]

    def __str__(self):
        return f"{self.name} ({self.project})"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    class Backend(models.TextChoices):
        INTERNVL = "internvl", "InternVL"
        AFFECTGPT = "affectgpt", "AffectGPT"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    backend = models.CharField(max_length=16, choices=Backend.choices)
    # The identity of the weights (ml.versions): computed by a process that has the files, at registration.
    # Predictions carry ml.versions.prediction_version(name, frames), which needs no files.
    name = models.CharField(max_length=200, help_text="Identity: internvl:<base>+<adapter id> or "
                                                      "affectgpt:<llm>+<checkpoint hash>")
    base_model = models.CharField(max_length=300, help_text="Hub id, or folder relative to the model directory")
    adapter_path = models.CharField(max_length=500, blank=True, help_text="LoRA adapter folder, relative to the "
                                                                          "model directory")
    adapter_sha256 = models.CharField(max_length=64, blank=True)
    checkpoint_path = models.CharField(max_length=500, blank=True, help_text="AffectGPT checkpoint, relative to "
                                                                             "the model directory")
    checkpoint_sha256 = models.CharField(max_length=64, blank=True)
    base_fingerprint = models.CharField(max_length=64, blank=True,
                                        help_text="sha256 of the base's config.json when it is a local folder")
    prompt_version = models.CharField(max_length=32, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    training_run = models.ForeignKey("TrainingRun", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="model_versions")
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    # Set when a clip of its training snapshot is erased: the weights may still carry what it learnt there.
    erased_data_at = models.DateTimeField(null=True, blank=True,
                                          help_text="When a clip it was trained on was erased")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="modelversion_unique_name_per_project"),
            models.UniqueConstraint(fields=["project", "backend"], condition=Q(status="active"),
                                    name="modelversion_one_active_per_backend"),
            models.CheckConstraint(condition=Q(status__in=["candidate", "active", "retired"]),
                                   name="modelversion_status_valid"),
        ]

    def __str__(self):
        return self.name


class Prediction(models.Model):
    """One backend's (or the fusion's) labels for one clip. Never overwrites human work."""

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="predictions")
    backend = models.CharField(max_length=32, help_text="internvl | affectgpt | fused | import")
    model_version = models.CharField(max_length=200)
    model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="predictions")
    labels = models.JSONField(default=list, help_text='[{"term": "anxious", "score": 0.8, "source": "internvl"}]')
    raw_text = models.TextField(blank=True)
    prompt_version = models.CharField(max_length=32, blank=True)
    flags = models.JSONField(default=list, blank=True, help_text="e.g. refusal, unknown_terms")
    seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["clip_id", "backend"]
        constraints = [
            models.UniqueConstraint(fields=["clip", "model_version"], name="prediction_unique_per_model_version"),
        ]
        indexes = [models.Index(fields=["model_version", "clip"], name="prediction_model_version"),
                   # the pre-label rate gauge (annotations.metrics) counts the last minutes' predictions
                   models.Index(fields=["created_at"], name="prediction_created")]

    def __str__(self):
        return f"{self.backend}:{self.clip_id}"


class Annotation(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SUBMITTED = "submitted", "Submitted"

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations")
    labels = models.JSONField(default=list, help_text='[{"term": "anxious", "source": "human"}]')
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    # Optimistic concurrency: a write names the version it was based on; a stale one gets 409.
    version = models.PositiveIntegerField(default=1)
    lead_time = models.FloatField(default=0.0, help_text="seconds of active work")
    last_idempotency_key = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(fields=["clip", "annotator"], name="annotation_unique_per_annotator"),
            models.CheckConstraint(condition=Q(status__in=["draft", "submitted"]), name="annotation_status_valid"),
            models.CheckConstraint(condition=Q(version__gte=1), name="annotation_version_positive"),
            models.CheckConstraint(condition=Q(lead_time__gte=0), name="annotation_lead_time_nonnegative"),
            models.CheckConstraint(condition=Q(status="draft") | Q(submitted_at__isnull=False),
                                   name="annotation_submitted_has_time"),
        ]

    def __str__(self):
        return f"{self.annotator} on clip {self.clip_id} ({self.status})"


class Review(models.Model):
    class Decision(models.TextChoices):
        ACCEPT = "accept", "Accept"
        REJECT = "reject", "Reject"
        FIX = "fix", "Fix"

    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    fixed_labels = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    annotation_version = models.PositiveIntegerField(help_text="The annotation version this review judged")
    # Written by the system for a trusted annotator's submit (the reviewer is the annotator).
    automatic = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(decision__in=["accept", "reject", "fix"]), name="review_decision_valid"),
            models.CheckConstraint(condition=~Q(decision="reject") | ~Q(reason=""), name="review_reject_needs_reason"),
            models.CheckConstraint(condition=~Q(decision="fix") | Q(fixed_labels__isnull=False),
                                   name="review_fix_needs_labels"),
            # One verdict per reviewer per annotation version: a double click cannot review twice.
            models.UniqueConstraint(fields=["annotation", "reviewer", "annotation_version"],
                                    name="review_unique_per_version"),
        ]


class ClipLabel(models.Model):
    """An index of the labels a clip carries, by canonical term and family, for the managers' filters: what
    the fusion proposed (with its score), what annotators submitted, and what was verified. Derived data,
    rewritten by services.clip_index.index_clip whenever one of those changes."""

    class Source(models.TextChoices):
        MODEL = "model", "Model (fused)"
        HUMAN = "human", "Submitted"
        VERIFIED = "verified", "Verified"

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="label_index")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    term = models.CharField(max_length=64)
    family = models.CharField(max_length=32)
    source = models.CharField(max_length=8, choices=Source.choices)
    score = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["clip", "source", "term"], name="cliplabel_unique")]
        indexes = [models.Index(fields=["project", "term", "source"], name="cliplabel_term"),
                   models.Index(fields=["project", "family", "source"], name="cliplabel_family")]


class ClipLease(models.Model):
    """A claim on a clip: who works on it right now, and for what. A clip is held for annotation by at most
    `overlap - submitted` people at once (services.queue decides), never twice by one person; review leases
    are counted apart and never block annotators. An expired lease is as good as none."""

    class Kind(models.TextChoices):
        ANNOTATE = "annotate", "Annotate"
        REVIEW = "review", "Review"

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="leases")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.ANNOTATE)
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clip", "user", "kind"], name="lease_unique_per_clip_user_kind"),
            models.CheckConstraint(condition=Q(kind__in=["annotate", "review"]), name="lease_kind_valid"),
            models.CheckConstraint(condition=Q(expires_at__gt=models.F("acquired_at")), name="lease_expires_after_start"),
        ]
        indexes = [models.Index(fields=["clip", "kind", "expires_at"], name="lease_clip_kind_expiry"),
                   models.Index(fields=["user", "kind", "expires_at"], name="lease_user_kind_expiry")]

    def __str__(self):
        return f"{self.user} {self.kind}s clip {self.clip_id} until {self.expires_at:%H:%M}"


class ClipSkip(models.Model):
    """An annotator passed on a clip, and why: it is not offered to them again, and managers read the reasons."""

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="skips")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="skips")
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clip", "user"], name="skip_unique_per_clip_user"),
            models.CheckConstraint(condition=~Q(reason=""), name="skip_needs_reason"),
        ]


class AnnotationRevision(models.Model):
    """Append-only history: every submitted version of an annotation, as submitted. Drafts are not kept here
    (a draft holds only its latest state); reviews are their own rows."""

    annotation = models.ForeignKey("Annotation", on_delete=models.CASCADE, related_name="revisions")
    version = models.PositiveIntegerField()
    labels = models.JSONField(default=list)
    lead_time = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["annotation", "version"]
        constraints = [models.UniqueConstraint(fields=["annotation", "version"], name="revision_unique_version")]


class EmotionTerm(models.Model):
    """The project's emotion vocabulary: autocomplete, normalisation and agreement all go through it.

    A canonical term has a family and a valence; each of its synonyms and word forms is a row of its own
    pointing at it (`canonical`). A term an annotator proposes waits in the `unassigned` family, flagged,
    until a manager approves it. Read it through services.vocabulary.project_vocabulary(project).
    """

    class Kind(models.TextChoices):
        TERM = "term", "Canonical term"
        SYNONYM = "synonym", "Synonym"
        WORD_FORM = "word_form", "Word form"

    class Valence(models.TextChoices):
        POSITIVE = "positive", "Positive"
        NEGATIVE = "negative", "Negative"
        NEUTRAL = "neutral", "Neutral"
        AMBIGUOUS = "ambiguous", "Ambiguous"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="vocabulary")
    term = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TERM)
    canonical = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="variants",
                                  help_text="The canonical term of a synonym or word form; empty for a term")
    family = models.CharField(max_length=64, blank=True, help_text="Required for a term; unassigned while proposed")
    valence = models.CharField(max_length=16, choices=Valence.choices, blank=True)
    source = models.CharField(max_length=16, default="seed", help_text="seed | human | model")
    flagged = models.BooleanField(default=False, help_text="Proposed term a manager should approve or merge")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["term"]
        constraints = [
            models.UniqueConstraint(fields=["project", "term"], name="emotionterm_unique_per_project"),
            models.CheckConstraint(condition=Q(term=models.functions.Lower(models.F("term"))) & ~Q(term=""),
                                   name="emotionterm_lowercase_nonempty"),
            # A term has its family and valence; a synonym or word form has its canonical term instead.
            models.CheckConstraint(condition=(Q(kind="term", canonical__isnull=True) & ~Q(family="") & ~Q(valence=""))
                                   | (Q(kind__in=["synonym", "word_form"]) & Q(canonical__isnull=False)),
                                   name="emotionterm_term_or_variant"),
        ]

    def __str__(self):
        return self.term


class DatasetSnapshot(models.Model):
    """A frozen set of verified clips with their labels; its content hash names it (services.snapshots).

    Immutable once frozen: the service never updates or deletes one, and only erasure removes an item. The
    hash covers every item's content, the vocabulary version and the split config, so freezing the same
    data again finds this row instead of making another."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="snapshots")
    name = models.CharField(max_length=120)
    content_hash = models.CharField(max_length=64)
    clip_count = models.PositiveIntegerField(default=0)
    # What the labels were resolved with, how the clips were split, and how they were chosen.
    vocabulary_version = models.PositiveIntegerField(default=1)
    split_config = models.JSONField(default=dict, blank=True,
                                    help_text='{"train": 0.8, "val": 0.1, "test": 0.1, "group_key": ""}')
    split_counts = models.JSONField(default=dict, blank=True, help_text='{"train": n, "val": n, "test": n}')
    filters = models.JSONField(default=dict, blank=True, help_text="The ClipFilter arguments of the first freeze")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    note = models.TextField(blank=True)
    # Erasure is the one change a frozen snapshot takes: its items for the erased clips go, and this says so.
    erased_count = models.PositiveIntegerField(default=0, help_text="Items removed by erasure since the freeze")
    erasures = models.JSONField(default=list, blank=True,
                                help_text='[{"at": iso time, "clips": n, "event": audit event id}]')

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="snapshot_unique_content"),
            models.UniqueConstraint(fields=["project", "name"], name="snapshot_unique_name"),
        ]

    def __str__(self):
        return f"{self.name} ({self.content_hash[:12]})"


class SnapshotItem(models.Model):
    """One verified clip as it was frozen. People are plain integer ids, not foreign keys, so that a frozen
    snapshot never blocks deleting a user account (and history keeps who did the work)."""

    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        VAL = "val", "Validation"
        TEST = "test", "Test"

    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.CASCADE, related_name="items")
    # RESTRICT: a snapshotted clip cannot be deleted alone, but goes with its project.
    clip = models.ForeignKey(Clip, on_delete=models.RESTRICT, related_name="snapshot_items")
    clip_name = models.CharField(max_length=300, default="")
    sha256 = models.CharField(max_length=64, default="")
    transcript = models.TextField(blank=True, default="")
    labels = models.JSONField(help_text="The verified words, in order")
    terms = models.JSONField(default=list, help_text="Each label's canonical term, parallel to labels")
    families = models.JSONField(default=list, help_text="Each label's family, parallel to labels")
    split = models.CharField(max_length=8, choices=Split.choices, default=Split.TRAIN)
    annotator_ids = models.JSONField(default=list, help_text="User ids of the accepted annotation's author(s)")
    reviewer_ids = models.JSONField(default=list, help_text="User ids of the reviewer(s) who verified it")
    predictions = models.JSONField(default=list, help_text='What the annotator was shown: [{"backend", '
                                                           '"model_version", "labels"}]; [] when blind')

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "clip"], name="snapshotitem_unique_clip"),
            models.CheckConstraint(condition=Q(split__in=["train", "val", "test"]), name="snapshotitem_split_valid"),
        ]
        # The JSONL writer reads one split of one snapshot at a time (and sorts by name itself).
        indexes = [models.Index(fields=["snapshot", "split", "clip_name"], name="snapshotitem_split_name")]

    def save(self, *args, **kwargs):
        # A frozen item is never edited: what a model was trained on must stay what it was. Erasure deletes.
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("snapshot items are immutable")
        super().save(*args, **kwargs)


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    base_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="training_runs_from")
    snapshot = models.ForeignKey(DatasetSnapshot, null=True, blank=True, on_delete=models.RESTRICT,
                                 related_name="training_runs")
    config = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    metrics = models.JSONField(default=list, blank=True, help_text="[{step, loss, lr, time}, ...]")
    eval_metrics = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Control (services.training): a manager's stop request, read by the worker between steps; how many
    # times a worker started (or resumed) the run, which also names the worker that owns it; the adapter
    # folder, relative to the model directory.
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    output_path = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(progress__gte=0) & Q(progress__lte=1), name="trainingrun_progress_range"),
            models.CheckConstraint(condition=Q(status__in=["queued", "running", "succeeded", "failed", "cancelled"]),
                                 name="trainingrun_status_valid"),
            # A run is never started twice: one queued-or-running run per project.
            models.UniqueConstraint(fields=["project"], condition=Q(status__in=["queued", "running"]),
                                    name="trainingrun_one_live_per_project"),
        ]


class Export(models.Model):
    """One build of a snapshot in one format with one set of options (services.exports).

    The options' hash is part of the key: asking again for the same snapshot, format and options finds this
    row (and its file) instead of building another. The artifact is one deterministic zip of the export
    folder (data, dataset card, optional media), so its checksum names the bytes."""

    class Format(models.TextChoices):
        # Stored values; the command line and the API use the dashed names in services.exports.FORMATS.
        MEROV_CSV = "merov_csv", "MER-OV CSV"
        TRAIN_JSONL = "train_jsonl", "JSONL for ml.train"
        INTERNVL_JSONL = "internvl_jsonl", "JSONL for InternVL fine-tuning"
        SWIFT_JSONL = "swift_jsonl", "JSONL for ms-swift"
        PARQUET = "parquet", "Parquet (Hugging Face datasets)"
        LABEL_STUDIO = "label_studio", "Label Studio JSON"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"  # the download passed its age; the file is gone, a rebuild makes it again
        ERASED = "erased", "Erased"  # it held an erased clip; the file is gone, a rebuild leaves the clip out

    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.CASCADE, related_name="exports")
    format = models.CharField(max_length=16, choices=Format.choices)
    options = models.JSONField(default=dict, blank=True, help_text="Normalised options: filters, media, "
                                                                   "pseudonymise")
    options_hash = models.CharField(max_length=64, default="", help_text="sha256 of the canonical options")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    file = models.FileField(upload_to="exports/", max_length=300, blank=True)
    checksum = models.CharField(max_length=64, blank=True, help_text="sha256 of the file")
    size_bytes = models.BigIntegerField(null=True, blank=True)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="When the download is removed")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "format", "options_hash"], name="export_unique_options"),
            models.CheckConstraint(condition=Q(status__in=["queued", "running", "done", "failed", "expired",
                                                           "erased"]), name="export_status_valid"),
        ]

    def __str__(self):
        return f"{self.get_format_display()} of {self.snapshot_id}"


class AuditEvent(models.Model):
    """Append-only history of changes. The database refuses UPDATE and DELETE (see the migration's triggers).

    References are plain ids without foreign-key constraints so that history survives deleted users,
    clips and projects.
    """

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                              db_constraint=False, related_name="+")
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
                                related_name="+")
    action = models.CharField(max_length=64, help_text="e.g. clip.imported, annotation.submitted")
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit events are append-only")


class AccountFlags(models.Model):
    """Per-user security state that auth.User has no field for."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account_flags")
    # Set for passwords someone else chose (bootstrap's generated one, an admin-made account): the next
    # login must pick a new one before doing anything else.
    must_change_password = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.user}: {'must change password' if self.must_change_password else 'ok'}"


class Caption(models.Model):
    """A human-centric caption of an unverified clip (face, expression, gaze, posture, voice, words) written
    by a vision-language model (services.captions): auxiliary training data, never a Prediction. It is kept
    for training only where the emotion terms extracted from it agree with the clip's fused pre-labels."""

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="captions")
    text = models.TextField()
    model_version = models.CharField(max_length=200)
    model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="captions")
    prompt_version = models.CharField(max_length=32)
    labels = models.JSONField(default=list, blank=True, help_text="Canonical vocabulary terms extracted from text")
    fused_labels = models.JSONField(default=list, blank=True,
                                    help_text="The clip's fused pre-label terms it was compared with")
    agreement = models.FloatField(null=True, blank=True, help_text="Jaccard of labels and fused_labels")
    kept = models.BooleanField(default=False, help_text="agreement >= config.training.caption_agreement")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["clip_id", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["clip", "model_version", "prompt_version"],
                                    name="caption_unique_per_model_prompt"),
        ]
        indexes = [models.Index(fields=["kept", "clip"], name="caption_kept_clip")]

    def __str__(self):
        return f"caption:{self.clip_id}:{self.prompt_version}"


class LabelStudioTask(models.Model):
    """Which Label Studio task a clip is (services.labelstudio): a second push updates it instead of importing
    the clip again, a pull finds the clip, and erasure deletes the task. Goes with the clip."""

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="labelstudio_tasks")
    ls_project = models.PositiveIntegerField(help_text="The Label Studio project's id")
    task_id = models.PositiveBigIntegerField(help_text="The Label Studio task's id")
    prediction_version = models.CharField(max_length=200, blank=True,
                                          help_text="The model version of the prediction last sent to it")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clip", "ls_project"], name="labelstudiotask_unique_clip"),
            models.UniqueConstraint(fields=["ls_project", "task_id"], name="labelstudiotask_unique_task"),
        ]

    def __str__(self):
        return f"clip {self.clip_id} = Label Studio task {self.task_id}"


class DismissedSuggestion(models.Model):
    """A near-duplicate pair of terms that a manager judged distinct (services.vocabulary_governance.dismiss):
    not suggested again until restored. Keyed by the two canonical terms' names, sorted, so a rename makes the
    pair new again (its evidence is then about another word)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dismissed_suggestions")
    term_a = models.CharField(max_length=64)
    term_b = models.CharField(max_length=64)
    dismissed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["term_a", "term_b"]
        constraints = [
            models.UniqueConstraint(fields=["project", "term_a", "term_b"], name="dismissedsuggestion_unique"),
            models.CheckConstraint(condition=Q(term_a__lt=F("term_b")),
                                   name="dismissedsuggestion_sorted"),
        ]

    def __str__(self):
        return f"{self.term_a} / {self.term_b} (not the same)"


class GoldClip(models.Model):
    """A verified clip a manager chose as a gold item (services.gold): served in annotators' queues at
    `config.gold.rate` like any other clip, its answers scored against the labels frozen here when it was
    marked. Unmarking keeps it (inactive) so that the answers already given keep their key."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gold_clips")
    clip = models.OneToOneField(Clip, on_delete=models.CASCADE, related_name="gold")
    labels = models.JSONField(help_text="The verified words when it was marked, in order")
    active = models.BooleanField(default=True, help_text="Served in the queue; off when a manager unmarked it")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "active"], name="goldclip_project_active")]

    def __str__(self):
        return f"gold clip {self.clip_id}"


class GoldAnswer(models.Model):
    """One annotator's answer to one gold clip: created when the queue serves it (so the clip page and its
    submit know this is a gold item for this person), scored on submit. Never an Annotation: agreement,
    snapshots, exports and the verified rule read only Annotation, so a gold answer can reach none of them.
    One per gold clip and annotator, so nobody is served the same gold clip twice."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"

    gold = models.ForeignKey(GoldClip, on_delete=models.CASCADE, related_name="answers")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="gold_answers")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    labels = models.JSONField(default=list, help_text="As an annotation's labels: the draft, then the answer")
    version = models.PositiveIntegerField(default=1)
    last_idempotency_key = models.CharField(max_length=64, blank=True)
    served_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    # Scores, set on submit (services.gold.score): precision, recall and F over canonical terms; family_f, the
    # same over emotion families; score, the F where a label matching only a gold term's family counts half.
    precision = models.FloatField(null=True, blank=True)
    recall = models.FloatField(null=True, blank=True)
    f = models.FloatField(null=True, blank=True)
    family_f = models.FloatField(null=True, blank=True)
    score = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-served_at"]
        constraints = [
            models.UniqueConstraint(fields=["gold", "annotator"], name="goldanswer_unique_per_annotator"),
            models.CheckConstraint(condition=Q(status__in=["open", "submitted", "skipped"]),
                                   name="goldanswer_status_valid"),
            models.CheckConstraint(condition=~Q(status="submitted") | (Q(submitted_at__isnull=False)
                                                                       & Q(score__isnull=False)),
                                   name="goldanswer_submitted_is_scored"),
            models.CheckConstraint(condition=Q(score__isnull=True) | (Q(score__gte=0) & Q(score__lte=1)),
                                   name="goldanswer_score_range"),
        ]
        indexes = [models.Index(fields=["annotator", "status"], name="goldanswer_annotator_status")]

    def __str__(self):
        return f"{self.annotator} on gold {self.gold_id} ({self.status})"
