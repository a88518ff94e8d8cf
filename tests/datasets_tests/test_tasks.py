import pytest
import timm

from datasets import UsageError, get_task, list_tasks


def test_registry_has_the_three_tasks_of_the_mission():
    assert set(list_tasks()) >= {"egg", "sports", "anime"}
    assert get_task("egg").num_classes == 2
    assert get_task("sports").num_classes == 100
    assert get_task("sports").layout == "split-folders"
    assert get_task("anime").classes == ("anime", "cartoon", "human")


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_names_real_timm_backbones(name):
    task = get_task(name)
    known = set(timm.list_models())
    assert set(task.backbones) <= known
    assert set(task.demo_backbones) <= known
    for family in ("resnet", "efficientnet", "mobilenet"):
        assert any(b.startswith(family) for b in task.backbones), family


def test_unknown_task_suggests_and_lists_the_registered_ones():
    with pytest.raises(
        UsageError, match=r"unknown task 'eggs'; did you mean egg.*registered tasks: anime, egg, sports"
    ):
        get_task("eggs")
