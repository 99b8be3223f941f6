"""Keys that earlier versions spelled otherwise: the speed switches were model.* keys before they became the run
settings of conf/speed/. A run started then is resumed with its overrides translated, and a user who types an old
key is told the new one."""

from __future__ import annotations

# old key -> {old value: the new override, or None when the old value is today's default}
RENAMED: dict[str, dict[str, str | None]] = {
    "model.fused": {"true": None, "false": "speed.loop=plain"},
    "model.triton": {"false": None, "true": "speed.loop=triton"},
    "model.compile": {"false": None, "true": "speed.compile=true"},
    "model.cuda_graph": {
        "false": None,
        "true": "speed.cuda_graph=forward_backward",
        "step": "speed.cuda_graph=whole_step",
    },
}


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value.strip().lower()


def translate(overrides: list[str]) -> list[str]:
    """A run's recorded overrides in today's spelling (unknown old values are kept, to be refused as typed)."""
    translated = []
    for override in overrides:
        key, value = _split(override)
        if key in RENAMED and value in RENAMED[key]:
            new = RENAMED[key][value]
            translated += [new] if new else []
        else:
            translated.append(override)
    return translated


def hint(key: str) -> str | None:
    """Where an old key went, for the unknown-key message; None for a key that was never renamed."""
    if key not in RENAMED:
        return None
    new = sorted({v.partition("=")[0] for v in RENAMED[key].values() if v})
    examples = ", ".join(v for v in RENAMED[key].values() if v)
    return f"{key} is now a run setting, {' or '.join(new)} (e.g. {examples}; conf/speed/)"
