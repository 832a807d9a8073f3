"""Event contracts: models may only change additively within a version; AsyncAPI documents match the code."""

from __future__ import annotations

import json

import pytest

from shared import asyncapi
from shared.events.catalog import EVENT_MODELS, MemberJoined
from shared.events.compat import breaking_changes, schema_file, schema_of
from shared.events.envelope import Envelope


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: f"{m.event_type}.v{m.event_version}")
def test_event_model_is_additive_to_its_committed_schema(model):
    committed = schema_file(model)
    assert committed.exists(), f"{committed.name} is not committed: run `python -m shared.events.compat`"
    problems = breaking_changes(json.loads(committed.read_text()), schema_of(model))
    assert problems == [], f"{model.event_type} v{model.event_version} changed incompatibly: {problems}"


def test_every_event_type_and_version_is_unique_and_has_a_topic():
    keys = [(m.event_type, m.event_version) for m in EVENT_MODELS]
    assert len(keys) == len(set(keys))
    assert all(m.topic and m.source_service for m in EVENT_MODELS)


def _member_joined_schema() -> dict:
    return schema_of(MemberJoined)


def test_checker_catches_a_removed_field():
    old = _member_joined_schema()
    new = json.loads(json.dumps(old))
    del new["properties"]["engagement_level"]
    new["required"].remove("engagement_level")
    assert breaking_changes(old, new) == ["engagement_level: removed"]


def test_checker_catches_a_changed_type():
    old = _member_joined_schema()
    new = json.loads(json.dumps(old))
    new["properties"]["email_consent"] = {"type": "string", "title": "Email Consent"}
    problems = breaking_changes(old, new)
    assert len(problems) == 1 and problems[0].startswith("email_consent: type changed")


def test_checker_catches_a_new_required_field_and_accepts_a_new_optional_one():
    old = _member_joined_schema()
    optional = json.loads(json.dumps(old))
    optional["properties"]["pronouns"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert breaking_changes(old, optional) == []
    required = json.loads(json.dumps(optional))
    required["required"].append("pronouns")
    assert breaking_changes(old, required) == ["pronouns: added as required"]


def test_checker_catches_a_changed_nested_sealed_field():
    old = _member_joined_schema()
    new = json.loads(json.dumps(old))
    new["$defs"]["Sealed"]["properties"]["nonce"] = {"type": "integer"}
    assert any("nonce" in p for p in breaking_changes(old, new))


def test_envelope_round_trips_and_keys_by_subject():
    from datetime import UTC, datetime

    from shared.events.catalog import MemberConfirmed

    env = Envelope.wrap(MemberConfirmed(member_id="m-1", confirmed_at=datetime.now(UTC)), correlation_id="req-1")
    again = Envelope.from_bytes(env.to_bytes())
    assert again == env and again.subject_id == "m-1" and again.correlation_id == "req-1"
    assert isinstance(again.payload(), MemberConfirmed)


@pytest.mark.parametrize("service", asyncapi.available_services())
def test_committed_asyncapi_document_matches_the_code(service):
    committed = asyncapi.DOC_DIR / f"{service}.json"
    assert committed.exists(), f"run `python -m shared.asyncapi` and commit {committed}"
    assert json.loads(committed.read_text()) == asyncapi.generate(service), (
        f"docs/asyncapi/{service}.json is stale: run `python -m shared.asyncapi` and review the diff"
    )
