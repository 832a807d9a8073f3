"""The events service's use cases, by concern, as its composition root wires them (one of each per process).

Each use case opens one unit of work (shared/uow.py): it loads state, asks a rule in domain.py, writes through
queries.py and emits its events in the same transaction.
"""

from __future__ import annotations

from services.events import db as tables
from services.events.checkin import CheckIn
from services.events.meetings import Meetings
from services.events.members import MemberReadModel
from services.events.reminders import Reminders
from services.events.rsvps import OWNER, Rsvps
from shared.crypto import KeyStore
from shared.ratelimit import Limits
from shared.uow import UnitsOfWork


class EventsService:
    """Meetings, RSVPs, check-in, reminders and the read model of members, sharing one database and key store."""

    def __init__(self, uows: UnitsOfWork, *, secret_key: str, public_base_url: str) -> None:
        keys = KeyStore(tables.subject_keys, OWNER)
        self.reminders = Reminders(uows)
        self.meetings = Meetings(uows, self.reminders, public_base_url=public_base_url)
        self.rsvps = Rsvps(uows, keys, secret_key=secret_key)
        self.members = MemberReadModel(keys, KeyStore(tables.member_keys, "membership"))
        self.check_in = CheckIn(uows, self.rsvps, self.members, secret_key=secret_key)
        self.limits = Limits(uows, secret_key)
