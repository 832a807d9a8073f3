"""The AsyncAPI document FastStream generates for each service, committed under docs/asyncapi/ and checked for drift."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from faststream.specification import AsyncAPI

SERVICES = ("membership", "events", "notifications", "campaigns")
DOC_DIR = Path(__file__).resolve().parent.parent / "docs" / "asyncapi"
# What every reader of the topics must know (docs/decisions/0010-outbox-at-least-once.md).
DELIVERY = (
    "Every topic is at least once: an event may be published more than once (a relay that dies after Kafka "
    "acknowledged an event, before it marked the event published, leaves it to the relay that takes over, which "
    "sends it again). Copies carry the same event_id: every consumer must deduplicate by event_id (Groundswell's "
    "consumers do, with their inbox tables). Events of one key (subject_id) keep their order on one partition."
)


def generate(service: str) -> dict[str, Any]:
    module = importlib.import_module(f"services.{service}.main")
    app = module.create_app()
    broker = app.state.runtime.broker
    spec = AsyncAPI(broker, title=f"Groundswell {service}", version="1", schema_version="3.0.0",
                    description=DELIVERY)
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
