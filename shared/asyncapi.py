"""The AsyncAPI document FastStream generates for each service, committed under docs/asyncapi/ and checked for drift."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from faststream.specification import AsyncAPI

SERVICES = ("membership", "events", "notifications", "campaigns")
DOC_DIR = Path(__file__).resolve().parent.parent / "docs" / "asyncapi"


def generate(service: str) -> dict[str, Any]:
    module = importlib.import_module(f"services.{service}.main")
    app = module.create_app()
    broker = app.state.runtime.broker
    spec = AsyncAPI(broker, title=f"Groundswell {service}", version="1", schema_version="3.0.0")
    return json.loads(spec.to_specification().to_json())


def available_services() -> list[str]:
    return [s for s in SERVICES if (Path(__file__).resolve().parent.parent / "services" / s / "main.py").exists()]


def write_all() -> list[Path]:
    DOC_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for service in available_services():
        path = DOC_DIR / f"{service}.json"
        path.write_text(json.dumps(generate(service), indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_all():
        print(p)
