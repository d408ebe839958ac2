"""Model families as a registry: a sorted table of lazily imported modules, each with a ``FAMILY`` object.

Adding a family is one module (a :class:`~livenight.families.base.ModelFamily` subclass instance named
``FAMILY``) plus one row in :data:`_FAMILIES`. Which family a checkpoint belongs to is decided from its content
(:func:`detect`): livenight's own format names it; foreign checkpoints are recognised by their keys and configs.
"""

from __future__ import annotations

import importlib

from livenight.errors import UnknownEngineError

#: family name → (module, what it is). Keep sorted.
_FAMILIES: dict[str, tuple[str, str]] = {
    "e2vid": ("livenight.families.e2vid", "E2VID, E2VID+, FireNet, FireNet+ (rpg_e2vid / event_cnn_minimal files)"),
    "nernet": ("livenight.families.nernet", "NER-Net (CVPR 2024) and livenight's smaller NER-Net-family models"),
}


def names() -> list[str]:
    return sorted(_FAMILIES)


def get(name: str):
    """The family object registered as ``name``."""
    if name not in _FAMILIES:
        raise UnknownEngineError(f"unknown model family {name!r} (known: {', '.join(names())})")
    return importlib.import_module(_FAMILIES[name][0]).FAMILY


def detect(checkpoint: dict, source: str = "checkpoint"):
    """The family a checkpoint (a dict read by :func:`livenight.model.checkpoint.read_checkpoint`) belongs to."""
    if not isinstance(checkpoint, dict):
        raise UnknownEngineError(f"{source}: not a checkpoint dict")
    named = checkpoint.get("family")
    if named is not None:
        return get(str(named))
    scores = [(get(n).detect(checkpoint), n) for n in names()]
    best, name = max(scores)
    if best <= 0:
        raise UnknownEngineError(f"{source}: no model family recognises this checkpoint (known: "
                                 f"{', '.join(f'{n}: {_FAMILIES[n][1]}' for n in names())})")
    return get(name)


def family_of(model):
    """The family a built network belongs to."""
    for n in names():
        fam = get(n)
        if fam.owns(model):
            return fam
    raise UnknownEngineError(f"no model family owns a {type(model).__name__} (known: {', '.join(names())})")


def load(path, sensor_size: tuple[int, int]):
    """``(family, network)`` for a checkpoint file of any registered family, built for ``(width, height)``."""
    from livenight.model.checkpoint import read_checkpoint

    ck = read_checkpoint(path)
    family = detect(ck, str(path))
    return family, family.from_checkpoint(ck, tuple(sensor_size), str(path))
