from django.urls import path

from . import dashboard_views, export_views, labelstudio_urls
from . import erasure_views as erase
from . import training_views as train
from . import vocabulary_views as vocab
from . import views
from . import work_views as work
from .api.media import serve_signed

app_name = "annotations"

urlpatterns = [
    path("", views.project_list, name="project-list"),
    path("projects/new/", views.project_create, name="project-create"),
    path("p/<slug:slug>/", views.project_detail, name="project-detail"),
    path("p/<slug:slug>/status.json", views.project_status, name="project-status"),
    path("p/<slug:slug>/upload/", views.clip_upload, name="clip-upload"),
    path("p/<slug:slug>/work/", work.work, name="work"),
    path("p/<slug:slug>/members/", work.members, name="members"),
    path("p/<slug:slug>/clips/", work.clip_list, name="clip-list"),
    path("p/<slug:slug>/next/", work.next_clip, name="next-clip"),
    path("p/<slug:slug>/next/annotate", work.next_annotate, name="next-annotate"),
    path("p/<slug:slug>/vocabulary.json", work.vocabulary_complete, name="vocabulary"),
    path("p/<slug:slug>/vocabulary/propose", work.vocabulary_propose, name="vocabulary-propose"),
    path("p/<slug:slug>/vocabulary/", vocab.vocabulary_manage, name="vocabulary-manage"),
    path("p/<slug:slug>/vocabulary/edit", vocab.vocabulary_edit, name="vocabulary-edit"),
    path("p/<slug:slug>/vocabulary/suggestions", vocab.vocabulary_suggestions, name="vocabulary-suggestions"),
    path("p/<slug:slug>/vocabulary/suggestions/dismiss", vocab.vocabulary_dismiss, name="vocabulary-dismiss"),
    path("p/<slug:slug>/vocabulary/export.csv", vocab.vocabulary_export, name="vocabulary-export"),
    path("p/<slug:slug>/vocabulary/import", vocab.vocabulary_import, name="vocabulary-import"),
    path("p/<slug:slug>/vocabulary/splits/<int:event_id>/", vocab.vocabulary_split_review,
         name="vocabulary-split-review"),
    path("p/<slug:slug>/training/", train.training_runs, name="training-runs"),
    path("p/<slug:slug>/training/banner", train.training_banner, name="training-banner"),
    path("p/<slug:slug>/training/<int:run_id>/", train.training_run, name="training-run"),
    path("p/<slug:slug>/training/<int:run_id>/live", train.training_run_live, name="training-run-live"),
    path("p/<slug:slug>/training/<int:run_id>/cancel", train.training_run_cancel, name="training-run-cancel"),
    path("p/<slug:slug>/models/", train.model_versions, name="models"),
    path("p/<slug:slug>/dashboard/", dashboard_views.project_dashboard, name="dashboard"),
    path("p/<slug:slug>/dashboard/refresh", dashboard_views.dashboard_refresh, name="dashboard-refresh"),
    path("p/<slug:slug>/exports/", export_views.export_list, name="exports"),
    path("p/<slug:slug>/exports/live", export_views.export_list_live, name="exports-live"),
    path("p/<slug:slug>/exports/<int:export_id>/download", export_views.export_download, name="export-download"),
    path("p/<slug:slug>/erase/", erase.project_erase, name="erase"),
    path("clips/<int:clip_id>/", work.clip_annotate, name="clip-annotate"),
    path("clips/<int:clip_id>/draft", work.clip_draft, name="clip-draft"),
    path("clips/<int:clip_id>/submit", work.clip_submit, name="clip-submit"),
    path("clips/<int:clip_id>/heartbeat", work.clip_heartbeat, name="clip-heartbeat"),
    path("clips/<int:clip_id>/skip", work.clip_skip, name="clip-skip"),
    path("clips/<int:clip_id>/review", work.clip_review, name="clip-review"),
    path("clips/<int:clip_id>/history", work.clip_history, name="clip-history"),
    path("clips/<int:clip_id>/gold", work.clip_gold, name="clip-gold"),
    path("clips/<int:clip_id>/leases/<int:lease_id>", work.clip_lease, name="clip-lease"),
    path("clips/<int:clip_id>/media", views.clip_media, name="clip-media"),
    path("clips/<int:clip_id>/thumbnail", views.clip_thumbnail, name="clip-thumbnail"),
    path("clips/<int:clip_id>/erase", erase.clip_erase, name="clip-erase"),
    path("media/s/<str:token>", serve_signed, name="signed-media"),
    *labelstudio_urls.urlpatterns,  # push/pull buttons and the per-project ML backend (/ls/<slug>/...)
]
