"""Is a new JSON Schema of an event a purely additive change of the committed one?

Additive means: every property the old schema had is still there with a compatible type, nothing
that was optional became required, and no new property is required. Anything else needs a new version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.events.catalog import EVENT_MODELS
from shared.events.envelope import Envelope, EventData

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_of(model: type[EventData]) -> dict[str, Any]:
    return model.model_json_schema(mode="serialization")


def schema_file(model: type[EventData]) -> Path:
    return SCHEMA_DIR / f"{model.event_type}.v{model.event_version}.json"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return root.get("$defs", {}).get(ref.split("/")[-1], {})
    return schema


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """A normalised set of type labels a value of this schema may have."""
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        out: set[str] = set()
        for option in schema["anyOf"]:
            out |= _types(option, root)
        return out
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return {f"enum:{v}" for v in values}
    if "type" in schema:
        t = schema["type"]
        label = t if isinstance(t, str) else "|".join(sorted(t))
        if label == "string" and "format" in schema:
            label += f":{schema['format']}"
        if label == "array":
            label += "[" + ",".join(sorted(_types(schema.get("items", {}), root))) + "]"
        return {label}
    if "properties" in schema:
        return {"object:" + schema.get("title", "")}
    return {"any"}


def breaking_changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    problems: list[str] = []
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    old_required = set(old.get("required", []))
    new_required = set(new.get("required", []))
    for name, old_schema in old_props.items():
        where = f"{path}{name}"
        if name not in new_props:
            problems.append(f"{where}: removed")
            continue
        old_types, new_types = _types(old_schema, old), _types(new_props[name], new)
        if not old_types <= new_types:
            problems.append(f"{where}: type changed from {sorted(old_types)} to {sorted(new_types)}")
        old_nested, new_nested = _resolve(old_schema, old), _resolve(new_props[name], new)
        if "properties" in old_nested:
            problems += breaking_changes(
                {**old_nested, "$defs": old.get("$defs", {})},
                {**new_nested, "$defs": new.get("$defs", {})},
                where + ".",
            )
    for name in sorted(new_required - old_required):
        problems.append(f"{path}{name}: " + ("became required" if name in old_props else "added as required"))
    return problems


def write_all() -> list[Path]:
    """Regenerate the committed schemas (run after an additive change, or when adding a version)."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for model in (*EVENT_MODELS,):
        path = schema_file(model)
        path.write_text(json.dumps(schema_of(model), indent=2, sort_keys=True) + "\n")
        written.append(path)
    envelope = SCHEMA_DIR / "Envelope.json"
    envelope.write_text(json.dumps(Envelope.model_json_schema(), indent=2, sort_keys=True) + "\n")
    written.append(envelope)
    return written


if __name__ == "__main__":
    for p in write_all():
        print(p)
