"""The typed project configuration: validated with the key's full path, saved only through its service (the
admin included), audited with its diff, and frozen where a snapshot depends on it."""

import pytest
from django.urls import reverse

from annotations.models import AuditEvent, DatasetSnapshot
from annotations.project_config import ConfigError, describe, diff, parse, project_config
from annotations.services import projects

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("raw,message", [
    ({"prelabel": {"backends": {"internvl": {"model": "m", "num_frames": 99}}}},
     "config.prelabel.backends.internvl.num_frames must be an integer 1..64"),
    ({"prelabel": {"backends": {"internvl": {"model": "m", "num_frames": True}}}},
     "config.prelabel.backends.internvl.num_frames must be an integer 1..64"),
    ({"prelabel": {"backends": {"affectgpt": {"model": "m", "num_frames": 8}}}},
     "config.prelabel.backends.affectgpt.num_frames is not a known key"),
    ({"prelabel": {"backends": {"internvl": {"model": "/etc/shadow"}}}},
     "config.prelabel.backends.internvl.model must be a hub id (org/name) or a path relative"),
    ({"prelabel": {"backends": {"internvl": {"model": "../../root"}}}},
     "config.prelabel.backends.internvl.model must be a hub id"),
    ({"annotation": {"suggestions": "always"}}, "config.annotation.suggestions must be one of preselect, show, hide"),
    ({"annotation": {"overlap": "2"}}, "config.annotation.overlap must be an integer 1..20"),
    ({"training": {"split": {"train": 0.5, "val": 0.1, "test": 0.1}}}, "config.training.split must add up to 1"),
    ({"training": {"trigger": "schedule"}}, "config.training.cron is required"),
    ({"labelstudio": {"url": "javascript:alert(1)"}}, "config.labelstudio.url must be an http(s) URL"),
    ({"gold": []}, "config.gold must be an object"),
    ({"training": {"min_test_clips": 0}}, "config.training.min_test_clips must be an integer 1..100000"),
    ({"training": {"min_test_clips": 100001}}, "config.training.min_test_clips must be an integer 1..100000"),
    ({"training": {"min_test_clips": 2.5}}, "config.training.min_test_clips must be an integer 1..100000"),
    ({"training": {"min_test_clips": True}}, "config.training.min_test_clips must be an integer 1..100000"),
    ({"training": {"max_hours": 0.05}}, "config.training.max_hours must be a number 0.1..168"),
    ({"training": {"max_hours": 169}}, "config.training.max_hours must be a number 0.1..168"),
    ({"training": {"max_hours": "12"}}, "config.training.max_hours must be a number 0.1..168"),
    ({"training": {"wheel_dir": "/data/wheel"}}, "config.training.wheel_dir is not a known key"),
    ([], "config must be an object"),
])
def test_wrong_values_name_their_full_path(raw, message):
    with pytest.raises(ConfigError) as err:
        parse(raw)
    assert any(e.startswith(message) for e in err.value.errors), err.value.errors


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        parse({"gold": {"rate": 2}, "annotation": {"overlap": 0}, "nonsense": 1})
    assert len(err.value.errors) == 3


def test_null_sections_and_absent_keys_mean_the_defaults():
    for raw in (None, {}, {"prelabel": None, "training": None}):
        config = parse(raw)
        assert config.prelabel.batch_size == 8 and config.annotation.overlap == 1
        assert config.training.split.test == 0.1 and config.backends() == {}
    assert parse({"gold": {"rate": 0}}).gold.rate == 0.0  # an integer is a number


def test_every_key_is_documented_with_a_default():
    keys = describe()
    assert all(k.help for k in keys)
    paths = {k.path for k in keys}
    assert {"config.annotation.suggestions", "config.gold.accuracy_floor", "config.training.caption_ratio",
            "config.training.group_key", "config.labelstudio.project_id",
            "config.prelabel.backends.internvl.num_frames", "config.training.min_test_clips",
            "config.training.max_hours"} <= paths


def test_the_training_limits_have_their_defaults_and_accept_their_range():
    from annotations.project_config import MIN_TEST_CLIPS

    training = parse({}).training
    assert training.min_test_clips == MIN_TEST_CLIPS == 30 and training.max_hours == 12
    training = parse({"training": {"min_test_clips": 100000, "max_hours": 0.1}}).training
    assert training.min_test_clips == 100000 and training.max_hours == 0.1
    assert parse({"training": {"max_hours": 168}}).training.max_hours == 168.0  # an integer is a number


def test_the_readme_lists_every_key_as_generated():
    """README.md's "Project configuration" table is `markdown_table()`, so it lists every key with its default."""
    from pathlib import Path

    from annotations.project_config import markdown_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert markdown_table() in readme
    for key in ("training.min_test_clips` | an integer 1..100000 | `30`",
                "training.max_hours` | a number 0.1..168 | `12.0`"):
        assert key in readme
    assert "AFFECTLOOP_WHEEL_DIR" in readme and "training.wheel_dir" not in readme


def test_the_accessor_parses_once_per_value(project):
    project.config = {"annotation": {"overlap": 3}}
    first = project_config(project)
    assert first.annotation.overlap == 3 and project_config(project) is first
    project.config = {"annotation": {"overlap": 2}}
    assert project_config(project).annotation.overlap == 2


def test_a_change_is_audited_with_its_diff(project, manager):
    projects.update_config(project, {"annotation": {"overlap": 2}}, actor=manager)
    projects.update_config(project, {"annotation": {"overlap": 3, "suggestions": "hide"}}, actor=manager)
    event = AuditEvent.objects.filter(action="project.config_changed").order_by("-id").first()
    assert event.actor == manager
    assert event.changes["diff"] == {"config.annotation.overlap": [2, 3],
                                     "config.annotation.suggestions": [None, "hide"]}
    project.refresh_from_db()
    assert project.config == {"annotation": {"overlap": 3, "suggestions": "hide"}}
    assert diff({"a": {"b": 1}}, {"a": {"b": 1}}) == {}


def test_an_invalid_change_is_refused_and_nothing_is_stored(project):
    with pytest.raises(ConfigError):
        projects.update_config(project, {"annotation": {"overlap": 0}})
    project.refresh_from_db()
    assert project.config == {} and not AuditEvent.objects.filter(action="project.config_changed").exists()


def test_split_and_group_key_are_frozen_once_a_snapshot_exists(project):
    projects.update_config(project, {"training": {"group_key": "speaker"}})
    DatasetSnapshot.objects.create(project=project, name="s1", content_hash="0" * 64)
    with pytest.raises(ConfigError, match="config.training.group_key is frozen"):
        projects.update_config(project, {"training": {"group_key": "session"}})
    with pytest.raises(ConfigError, match="config.training.split.train is frozen"):
        projects.update_config(project, {"training": {"group_key": "speaker",
                                                      "split": {"train": 0.7, "val": 0.2, "test": 0.1}}})
    projects.update_config(project, {"training": {"group_key": "speaker", "epochs": 5}})  # others may change


def test_the_admin_shows_the_keys_and_refuses_a_bad_config(client, project, manager):
    client.force_login(manager)
    url = reverse("admin:annotations_project_change", args=[project.pk])
    page = client.get(url).content.decode()
    assert "annotation.suggestions" in page and "preselect" in page and "training.group_key" in page
    form = {"name": project.name, "slug": project.slug, "description": "", "config":
            '{"prelabel": {"backends": {"internvl": {"model": "m", "num_frames": 99}}}}',
            "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"}
    response = client.post(url, form)
    assert response.status_code == 200
    assert "config.prelabel.backends.internvl.num_frames must be an integer 1..64" in response.content.decode()
    project.refresh_from_db()
    assert project.config == {}
    form["config"] = '{"annotation": {"overlap": 2}}'
    assert client.post(url, form).status_code == 302
    project.refresh_from_db()
    assert project.config == {"annotation": {"overlap": 2}}
    assert AuditEvent.objects.get(action="project.config_changed").actor == manager
