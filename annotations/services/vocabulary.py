"""The project vocabulary: one `project_vocabulary(project)` that fusion, active learning, metrics and the
UI read the vocabulary through."""

from __future__ import annotations

from ml.vocabulary import Vocabulary

from ..models import Project


def project_vocabulary(project: Project) -> Vocabulary:
    """The project's vocabulary; the default one until the project's own terms are filled."""
    return Vocabulary.default()
