"""Model and hardware profiles: what the simulated server "has" and how fast it is.

A profile is a small JSON document::

    {
      "gpus": [{"id": "GPU-sim-0", "name": "Simulated GPU", "library": "cuda",
                "vram_bytes": 25769803776}],
      "cpu_slowdown": 10.0,
      "models": [
        {"name": "llama3.2:1b", "size": 1321098329, "vram": 2400000000,
         "family": "llama", "parameter_size": "1.2B", "quantization_level": "Q8_0",
         "context_length": 131072, "load_seconds": 1.5,
         "prompt_tps": 6000, "decode_tps": 180,
         "scaling_alpha": 0.85, "saturation": 8, "decline": 0.02,
         "kv_bytes_per_token": 32768, "response_tokens": 48}
      ]
    }

Decode speed shares out across the active slots of one loaded model: with
``n`` sequences decoding at once the model produces
``aggregate(n) = decode_tps * min(n, saturation) ** scaling_alpha``
tokens/s in total, reduced by ``decline`` per slot beyond ``saturation``
(floored at half), and each sequence gets ``aggregate(n) / n``. Throughput
therefore rises with parallel slots, flattens at the saturation count and
then falls slightly, while per-stream latency only grows: a tuner has an
optimum to find. Memory grows with ``num_parallel * num_ctx`` through
``kv_bytes_per_token``; what does not fit in VRAM runs on the CPU,
``cpu_slowdown`` times slower for that share.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

GiB = 1024**3
#: The context the profile's "vram" figure is measured at.
BASE_CONTEXT = 4096


class ProfileError(ValueError):
    """The profile file is malformed; the message names the field."""


@dataclass(frozen=True)
class GPU:
    id: str
    name: str
    library: str
    vram_bytes: int


@dataclass(frozen=True)
class ModelProfile:
    name: str
    size: int
    vram: int
    family: str
    parameter_size: str
    quantization_level: str
    context_length: int = 131072
    load_seconds: float = 1.0
    prompt_tps: float = 2000.0
    decode_tps: float = 50.0
    scaling_alpha: float = 0.8
    saturation: int = 8
    decline: float = 0.0
    kv_bytes_per_token: int = 0
    response_tokens: int = 48
    capabilities: tuple[str, ...] = ("completion",)

    @property
    def digest(self) -> str:
        return hashlib.sha256(("ollama-ops-sim:" + self.name).encode()).hexdigest()

    def aggregate_tps(self, n: int) -> float:
        """Total tokens/s of the model with ``n`` sequences decoding at once."""
        if n <= 0:
            return 0.0
        eff = min(n, self.saturation)
        agg = float(self.decode_tps) * math.pow(eff, self.scaling_alpha)
        if n > self.saturation and self.decline > 0:
            agg *= max(0.5, 1.0 - self.decline * (n - self.saturation))
        return agg

    def per_stream_tps(self, n: int) -> float:
        return self.aggregate_tps(n) / n if n > 0 else self.decode_tps

    def memory(self, num_ctx: int, num_parallel: int) -> int:
        """Bytes needed once loaded: weights + KV cache for every slot."""
        extra = self.kv_bytes_per_token * (num_ctx * num_parallel - BASE_CONTEXT)
        return max(self.size, self.vram + extra)


@dataclass(frozen=True)
class Profile:
    models: dict[str, ModelProfile]
    gpus: tuple[GPU, ...] = ()
    cpu_slowdown: float = 10.0
    source: str = "built-in"
    ordered: tuple[str, ...] = field(default=())

    @property
    def total_vram(self) -> int:
        return sum(g.vram_bytes for g in self.gpus)

    def lookup(self, name: str) -> ModelProfile | None:
        """Find a model the way Ollama names them: a missing tag means ':latest'."""
        if name in self.models:
            return self.models[name]
        if ":" not in name.rsplit("/", 1)[-1]:
            return self.models.get(name + ":latest")
        if name.endswith(":latest"):
            return self.models.get(name[: -len(":latest")])
        return None


#: The built-in profile: two small models and one mid-size on a 24 GiB GPU.
DEFAULT_PROFILE: dict[str, Any] = {
    "gpus": [
        {
            "id": "GPU-00000000-0000-0000-0000-000000000sim",
            "name": "Simulated GPU 24GB",
            "library": "cuda",
            "vram_bytes": 24 * GiB,
        }
    ],
    "cpu_slowdown": 10.0,
    "models": [
        {
            "name": "llama3.2:1b",
            "size": 1_321_098_329,
            "vram": 2_500_000_000,
            "family": "llama",
            "parameter_size": "1.2B",
            "quantization_level": "Q8_0",
            "context_length": 131072,
            "load_seconds": 1.2,
            "prompt_tps": 8000.0,
            "decode_tps": 180.0,
            "scaling_alpha": 0.85,
            "saturation": 12,
            "decline": 0.02,
            "kv_bytes_per_token": 32_768,
            "response_tokens": 48,
        },
        {
            "name": "qwen2.5:0.5b",
            "size": 397_821_319,
            "vram": 1_100_000_000,
            "family": "qwen2",
            "parameter_size": "494.03M",
            "quantization_level": "Q4_K_M",
            "context_length": 32768,
            "load_seconds": 0.8,
            "prompt_tps": 12000.0,
            "decode_tps": 260.0,
            "scaling_alpha": 0.85,
            "saturation": 16,
            "decline": 0.02,
            "kv_bytes_per_token": 12_288,
            "response_tokens": 40,
        },
        {
            "name": "qwen2.5:7b",
            "size": 4_683_087_332,
            "vram": 6_200_000_000,
            "family": "qwen2",
            "parameter_size": "7.6B",
            "quantization_level": "Q4_K_M",
            "context_length": 32768,
            "load_seconds": 4.0,
            "prompt_tps": 2500.0,
            "decode_tps": 75.0,
            "scaling_alpha": 0.8,
            "saturation": 8,
            "decline": 0.03,
            "kv_bytes_per_token": 57_344,
            "response_tokens": 64,
        },
    ],
}

_MODEL_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "size": (int,),
    "vram": (int,),
    "family": (str,),
    "parameter_size": (str,),
    "quantization_level": (str,),
    "context_length": (int,),
    "load_seconds": (int, float),
    "prompt_tps": (int, float),
    "decode_tps": (int, float),
    "scaling_alpha": (int, float),
    "saturation": (int,),
    "decline": (int, float),
    "kv_bytes_per_token": (int,),
    "response_tokens": (int,),
    "capabilities": (list,),
}
_REQUIRED = ("name", "size", "family", "parameter_size", "quantization_level")


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ProfileError(f"{where}: {msg}")


def profile_from_dict(data: object, source: str = "built-in") -> Profile:
    """Validate a decoded profile document."""
    _check(isinstance(data, dict), source, "the profile must be a JSON object")
    assert isinstance(data, dict)
    unknown = set(data) - {"gpus", "models", "cpu_slowdown", "comment"}
    _check(not unknown, source, f"unknown top-level keys {sorted(unknown)}")
    gpus: list[GPU] = []
    raw_gpus = data.get("gpus", [])
    _check(isinstance(raw_gpus, list), source, '"gpus" must be a list')
    for i, g in enumerate(raw_gpus):
        where = f"{source}: gpus[{i}]"
        _check(isinstance(g, dict), where, "must be an object")
        vram = g.get("vram_bytes")
        _check(
            isinstance(vram, int) and not isinstance(vram, bool) and vram > 0,
            where,
            '"vram_bytes" must be a positive integer',
        )
        gpus.append(
            GPU(
                id=str(g.get("id", f"GPU-sim-{i}")),
                name=str(g.get("name", "Simulated GPU")),
                library=str(g.get("library", "cuda")),
                vram_bytes=int(vram),
            )
        )
    slow = data.get("cpu_slowdown", 10.0)
    _check(
        isinstance(slow, (int, float)) and not isinstance(slow, bool) and slow >= 1,
        source,
        '"cpu_slowdown" must be a number >= 1',
    )
    raw_models = data.get("models")
    _check(
        isinstance(raw_models, list) and len(raw_models) > 0,
        source,
        '"models" must be a non-empty list',
    )
    assert isinstance(raw_models, list)
    models: dict[str, ModelProfile] = {}
    order: list[str] = []
    for i, m in enumerate(raw_models):
        where = f"{source}: models[{i}]"
        _check(isinstance(m, dict), where, "must be an object")
        for key in _REQUIRED:
            _check(key in m, where, f'missing "{key}"')
        for key, value in m.items():
            _check(key in _MODEL_FIELDS or key == "comment", where, f'unknown key "{key}"')
            if key == "comment":
                continue
            ok = isinstance(value, _MODEL_FIELDS[key]) and not isinstance(value, bool)
            _check(ok, where, f'"{key}" has the wrong type ({type(value).__name__})')
        kwargs = {k: v for k, v in m.items() if k != "comment"}
        kwargs.setdefault("vram", kwargs["size"])
        if "capabilities" in kwargs:
            kwargs["capabilities"] = tuple(str(c) for c in kwargs["capabilities"])
        for key in ("load_seconds", "decline"):
            _check(float(kwargs.get(key, 0)) >= 0, where, f'"{key}" must be >= 0')
        for key in ("prompt_tps", "decode_tps", "scaling_alpha"):
            if key in kwargs:
                _check(float(kwargs[key]) > 0, where, f'"{key}" must be > 0')
        for key in ("saturation", "response_tokens", "size", "context_length"):
            if key in kwargs:
                _check(int(kwargs[key]) >= 1, where, f'"{key}" must be >= 1')
        mp = ModelProfile(**kwargs)
        _check(mp.name not in models, where, f'duplicate model "{mp.name}"')
        models[mp.name] = mp
        order.append(mp.name)
    return Profile(
        models=models,
        gpus=tuple(gpus),
        cpu_slowdown=float(slow),
        source=source,
        ordered=tuple(order),
    )


def load_profile(path: str | None) -> Profile:
    """The built-in profile, or the JSON file at ``path``."""
    if not path:
        return profile_from_dict(copy.deepcopy(DEFAULT_PROFILE))
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ProfileError(f"{path}: cannot read the profile: {e.strerror}") from e
    except ValueError as e:
        raise ProfileError(f"{path}: not valid JSON: {e}") from e
    return profile_from_dict(data, source=path)
