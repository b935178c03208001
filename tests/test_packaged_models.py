"""Short model names: the split-zip MPNet volumes are joined once, atomically; unknown names pass through."""

import io
import zipfile

from distill_trainer.study import packaged_models


def test_mpnet_volumes_are_joined_once_into_the_cache(tmp_path, monkeypatch):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zipped.writestr("all-mpnet-base-v2/model.safetensors", b"\0" * 5000)
    data = archive.getvalue()
    size = len(data) // 5 + 1
    volumes = []
    for number in range(5):  # five volumes of one zip, as the PyPI packages ship it
        volumes.append(tmp_path / f"all-mpnet-base-v2.zip.00{number + 1}")
        volumes[-1].write_bytes(data[number * size : (number + 1) * size])
    calls = []
    monkeypatch.setattr(
        packaged_models, "locate_volume", lambda name, number: calls.append(name) or str(volumes[number - 1])
    )
    monkeypatch.setenv("DISTILL_TRAINER_CACHE", str(tmp_path / "cache"))
    folder = packaged_models.resolve_model("all-mpnet-base-v2")
    assert folder == str(tmp_path / "cache" / "all-mpnet-base-v2")
    assert (tmp_path / "cache" / "all-mpnet-base-v2" / "model.safetensors").read_bytes() == b"\0" * 5000
    assert packaged_models.resolve_model("all-mpnet-base-v2") == folder and len(calls) == 5  # second call: cached
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["all-mpnet-base-v2"]  # no partial leftovers


def test_without_the_packages_short_names_mean_hub_ids(tmp_path, monkeypatch):
    def missing(name, number):
        raise packaged_models.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(packaged_models, "locate_volume", missing)
    monkeypatch.setenv("DISTILL_TRAINER_CACHE", str(tmp_path))
    assert packaged_models.resolve_model("all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    assert packaged_models.resolve_model("someone/model") == "someone/model"
