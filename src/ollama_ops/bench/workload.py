"""What is asked (pure): prompts, built in or from a JSONL file, and output lengths.

A JSONL file has one JSON object per line with a ``"prompt"`` string and,
optionally, ``"max_tokens"`` (an integer that overrides ``--output-tokens``
for that prompt). Blank lines are skipped.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BenchError

#: The guide's prompt (its benchmark sends it five times).
GUIDE_PROMPT = "Explain the difference between TCP and UDP in networking."

BUILTIN_PROMPTS: tuple[str, ...] = (
    GUIDE_PROMPT,
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Summarize the causes and consequences of the French Revolution in five bullet points.",
    "Explain how a hash table works and when its lookups become slow.",
    "Give a recipe for a vegetarian lasagna with a shopping list.",
    "What are the trade-offs between SQL and NoSQL databases for a small web shop?",
    "Describe the water cycle to a ten-year-old.",
    "Write a Python function that checks whether a string is a palindrome, and explain it.",
)


@dataclass(frozen=True)
class OutputLength:
    """Tokens to ask for: fixed (``lo == hi``), uniform in [lo, hi], or normal(mean, sd)."""

    lo: int
    hi: int
    sd: float = 0.0

    def draw(self, rng: random.Random) -> int:
        if self.sd > 0:
            mean = (self.lo + self.hi) / 2
            return max(1, round(rng.gauss(mean, self.sd)))
        if self.lo == self.hi:
            return self.lo
        return rng.randint(self.lo, self.hi)

    def describe(self) -> str:
        if self.sd > 0:
            return f"{self.lo}~{self.sd:g}"
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


_LENGTH = re.compile(r"^\s*(\d+)\s*(?:(-|~)\s*(\d+(?:\.\d+)?)\s*)?$")


def parse_output_length(text: str) -> OutputLength:
    """``"128"`` fixed, ``"64-256"`` uniform, ``"128~32"`` normal with sd 32."""
    m = _LENGTH.match(text)
    hint = "e.g. 128 (fixed), 64-256 (uniform) or 128~32 (normal, sd 32)"
    if m is None:
        raise BenchError(f"--output-tokens {text!r}: {hint}")
    first = int(m.group(1))
    if first < 1:
        raise BenchError(f"--output-tokens {text!r}: lengths start at 1 token; {hint}")
    if m.group(2) is None:
        return OutputLength(first, first)
    if m.group(2) == "~":
        return OutputLength(first, first, float(m.group(3)))
    if "." in m.group(3) or int(m.group(3)) < first:
        raise BenchError(f"--output-tokens {text!r}: the range must be LOW-HIGH; {hint}")
    return OutputLength(first, int(m.group(3)))


@dataclass(frozen=True)
class Prompt:
    text: str
    max_tokens: int | None = None


@dataclass(frozen=True)
class Workload:
    """Prompts used in turn and the output length (None: the model's natural length)."""

    prompts: tuple[Prompt, ...]
    output: OutputLength | None = None
    source: str = "built-in"

    def pick(self, index: int, rng: random.Random) -> tuple[str, int | None]:
        """The prompt and output token limit of request ``index``."""
        prompt = self.prompts[index % len(self.prompts)]
        if prompt.max_tokens is not None:
            return prompt.text, prompt.max_tokens
        return prompt.text, self.output.draw(rng) if self.output else None


def builtin(output: OutputLength | None = None, guide: bool = False) -> Workload:
    """The built-in prompts, or only the guide's prompt."""
    texts = (GUIDE_PROMPT,) if guide else BUILTIN_PROMPTS
    return Workload(tuple(Prompt(t) for t in texts), output)


def parse_jsonl(text: str, name: str) -> tuple[Prompt, ...]:
    """Prompts from JSONL text; the first bad line is a one-line error naming it."""
    out: list[Prompt] = []
    want = 'each line must be a JSON object like {"prompt": "...", "max_tokens": 128}'
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise BenchError(f"{where}: not JSON ({exc.args[0].split(':')[0]}); {want}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise BenchError(f'{where}: no "prompt" string; {want}')
        limit = obj.get("max_tokens")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise BenchError(f'{where}: "max_tokens" must be a whole number >= 1; {want}')
        out.append(Prompt(obj["prompt"], limit))
    if not out:
        raise BenchError(f"{name}: no prompts; {want}")
    return tuple(out)


def load_jsonl(path: str, output: OutputLength | None = None) -> Workload:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BenchError(f"--prompts {path!r} cannot be read ({why}); give a JSONL file") from None
    return Workload(parse_jsonl(text, path), output, source=path)
