from django.urls import path

from . import views

app_name = "annotations"

urlpatterns = [
    path("", views.project_list, name="project-list"),
    path("projects/new/", views.project_create, name="project-create"),
    path("p/<slug:slug>/", views.project_detail, name="project-detail"),
    path("p/<slug:slug>/status.json", views.project_status, name="project-status"),
    path("p/<slug:slug>/upload/", views.clip_upload, name="clip-upload"),
    path("clips/<int:clip_id>/media", views.clip_media, name="clip-media"),
    path("clips/<int:clip_id>/thumbnail", views.clip_thumbnail, name="clip-thumbnail"),
]
