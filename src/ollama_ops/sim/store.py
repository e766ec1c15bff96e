"""The model store under OLLAMA_MODELS, laid out as Ollama lays it out.

* ``manifests/<host>/<namespace>/<model>/<tag>``: the registry's manifest JSON;
* ``blobs/sha256-<hex>``: every layer and the config, named by digest
  (``-partial`` while downloading).

Names follow Ollama's model.ParseName: ``[host/][namespace/]model[:tag]``, host
``registry.ollama.ai``, namespace ``library`` and tag ``latest`` by default,
each part made of letters, digits, ``_``, ``-`` and ``.`` and not starting with
``-`` or ``.`` (so that no part is ``..``: a name never leaves the store).

A stored model becomes a ``ModelProfile``: its family, parameter size and
quantization come from the config blob Ollama writes (``model_family``,
``model_type``, ``file_type``), its size is the manifest's, and the speed
fields from an optional ``ollama_ops_sim`` object in the same config (see
registry.py), so that a pulled model is generated with like any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from .profile import ModelProfile, ProfileError, profile_from_dict

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,349}(:[0-9]{1,5})?")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class InvalidName(ValueError):
    """Not a valid model name (Ollama: ``invalid model name``)."""


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """DisplayShortest: ``model:tag`` in the default host and namespace."""
        if self.host == DEFAULT_HOST:
            if self.namespace == DEFAULT_NAMESPACE:
                return f"{self.model}:{self.tag}"
            return f"{self.namespace}/{self.model}:{self.tag}"
        return self.full

    @property
    def repository(self) -> str:
        """``namespace/model``, as the registry's URL paths name it."""
        return f"{self.namespace}/{self.model}"


def parse_name(text: str) -> ModelName:
    """model.ParseName with defaults filled in. Raises InvalidName."""
    if not isinstance(text, str) or not text or len(text) > 512:
        raise InvalidName(text)
    rest, tag = text, DEFAULT_TAG
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, _, tag = rest.rpartition(":")
    parts = rest.split("/")
    if len(parts) > 3:
        raise InvalidName(text)
    host = parts[0] if len(parts) == 3 else DEFAULT_HOST
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    model = parts[-1]
    ok = (
        _HOST.fullmatch(host)
        and _PART.fullmatch(namespace)
        and _PART.fullmatch(model)
        and _TAG.fullmatch(tag)
    )
    if not ok:
        raise InvalidName(text)
    return ModelName(host, namespace, model, tag)


@dataclass(frozen=True)
class StoredModel:
    name: ModelName
    profile: ModelProfile
    digest: str  # sha256 of the manifest, as /api/tags shows it
    modified: float  # the manifest's mtime


class ModelStore:
    """Paths and reads/writes of one OLLAMA_MODELS directory."""

    def __init__(self, root: str) -> None:
        self.root = root

    def manifest_path(self, name: ModelName) -> str:
        return os.path.join(self.root, "manifests", name.host, name.namespace, name.model, name.tag)

    def blob_path(self, digest: str) -> str:
        if not DIGEST.fullmatch(digest):
            raise ValueError(f"invalid digest {digest!r}")
        return os.path.join(self.root, "blobs", digest.replace(":", "-"))

    def scan(self) -> tuple[dict[str, StoredModel], list[str]]:
        """Every readable manifest: (models by full name, problems to warn about)."""
        models: dict[str, StoredModel] = {}
        problems: list[str] = []
        top = os.path.join(self.root, "manifests")
        if not os.path.isdir(top):
            return models, problems
        for dirpath, _dirs, files in os.walk(top):
            rel = os.path.relpath(dirpath, top).split(os.sep)
            if len(rel) != 3:
                continue
            for tag in files:
                try:
                    name = parse_name(f"{rel[0]}/{rel[1]}/{rel[2]}:{tag}")
                except InvalidName:
                    continue
                try:
                    models[name.full] = self.read(name)
                except (OSError, ValueError) as e:
                    problems.append(f"{name.short}: {e}")
        return models, problems

    def read(self, name: ModelName) -> StoredModel:
        """Read one model's manifest and config. Raises OSError or ValueError."""
        path = self.manifest_path(name)
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
        manifest = json.loads(raw)
        config: dict[str, Any] = {}
        cfg_digest = (manifest.get("config") or {}).get("digest") or ""
        if cfg_digest:
            with open(self.blob_path(cfg_digest), "rb") as f:
                loaded = json.loads(f.read(1 << 20))
            if isinstance(loaded, dict):
                config = loaded
        layers = [*(manifest.get("layers") or []), manifest.get("config") or {}]
        size = sum(int(x.get("size") or 0) for x in layers if isinstance(x, dict))
        return StoredModel(
            name=name,
            profile=model_profile(name.short, size, config),
            digest=hashlib.sha256(raw).hexdigest(),
            modified=os.stat(path).st_mtime,
        )

    def remove(self, name: ModelName) -> None:
        """Delete the manifest, then the blobs no other manifest uses."""
        path = self.manifest_path(name)
        with open(path, "rb") as f:
            manifest = json.loads(f.read(1 << 20))
        os.remove(path)
        used: set[str] = set()
        others, _ = self.scan()
        for other in others.values():
            used.update(self.digests(other.name))
        for digest in _manifest_digests(manifest):
            if digest not in used:
                with contextlib.suppress(OSError, ValueError):
                    os.remove(self.blob_path(digest))

    def digests(self, name: ModelName) -> list[str]:
        try:
            with open(self.manifest_path(name), "rb") as f:
                return _manifest_digests(json.loads(f.read(1 << 20)))
        except (OSError, ValueError):
            return []


def _manifest_digests(manifest: Any) -> list[str]:
    if not isinstance(manifest, dict):
        return []
    entries = [*(manifest.get("layers") or []), manifest.get("config") or {}]
    return [
        str(x["digest"])
        for x in entries
        if isinstance(x, dict) and DIGEST.fullmatch(str(x.get("digest", "")))
    ]


def model_profile(short_name: str, size: int, config: dict[str, Any]) -> ModelProfile:
    """The ModelProfile of a stored model. Raises ValueError on a bad ``ollama_ops_sim``."""
    extra = config.get("ollama_ops_sim") or {}
    if not isinstance(extra, dict):
        raise ValueError('"ollama_ops_sim" in the config must be an object')
    doc = {
        "name": short_name,
        "size": max(1, int(size)),
        "family": str(config.get("model_family") or "llama"),
        "parameter_size": str(config.get("model_type") or ""),
        "quantization_level": str(config.get("file_type") or ""),
        **{k: v for k, v in extra.items() if k not in ("name", "size")},
    }
    try:
        profile = profile_from_dict({"models": [doc]}, source=short_name)
    except ProfileError as e:
        raise ValueError(str(e)) from None
    return profile.models[short_name]
