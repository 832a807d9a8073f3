"""Event contracts: the envelope and the catalog of event types."""

from shared.events.catalog import *  # noqa: F403
from shared.events.catalog import EVENT_MODELS, model_for
from shared.events.envelope import Envelope, EventData, Sealed

__all__ = ["EVENT_MODELS", "Envelope", "EventData", "Sealed", "model_for"]
