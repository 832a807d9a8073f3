"""The one envelope every event travels in, and the base class of every event's data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Sealed(BaseModel):
    """A personal value encrypted with its subject's data key (AES-GCM); unreadable once the key is destroyed."""

    model_config = ConfigDict(frozen=True)

    key_owner: str = Field(description="service that holds the subject's key")
    key_id: str = Field(description="id of the subject whose key sealed this value")
    nonce: str = Field(description="base64 AES-GCM nonce")
    ciphertext: str = Field(description="base64 AES-GCM ciphertext with tag")


class EventData(BaseModel):
    """Base of every event's `data`. Subclasses set the class variables that place them in the catalog."""

    model_config = ConfigDict(extra="ignore")

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1
    topic: ClassVar[str]
    source_service: ClassVar[str]

    def subject(self) -> str:
        """The aggregate's id: the envelope's subject_id and the Kafka key."""
        raise NotImplementedError


class Envelope(BaseModel):
    """What travels on Kafka: metadata for routing, tracing and idempotency around the event's data."""

    model_config = ConfigDict(extra="ignore")

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    version: int
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str
    correlation_id: str
    causation_id: str | None = None
    subject_id: str
    data: dict[str, Any]

    @classmethod
    def wrap(
        cls,
        data: EventData,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Envelope:
        return cls(
            type=data.event_type,
            version=data.event_version,
            source=data.source_service,
            correlation_id=correlation_id or str(uuid.uuid4()),
            causation_id=causation_id,
            subject_id=data.subject(),
            data=data.model_dump(mode="json"),
            **({"occurred_at": occurred_at} if occurred_at else {}),
        )

    def payload(self) -> EventData:
        """The typed data of this event, validated against the catalog's model for its type and version."""
        from shared.events.catalog import model_for

        return model_for(self.type, self.version).model_validate(self.data)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        return cls.model_validate_json(raw)
