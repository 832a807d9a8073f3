"""OSDI as Action Network serves it: messages, the mailings organisers write (HAL+JSON, read only).

Authentication is the `OSDI-API-Token` header; the collection pages with `page` and `per_page` (at most 25). A key
sees the mailings written in its scope or under it, as an organiser of that scope does; another is not found (404),
so a key learns nothing of mailings outside its scope. A message names its audience in words and carries its
statistics: sent, clicked, bounced and unsubscribed in aggregate, `opened` null (Groundswell has no open-tracking
pixel). No recipient is listed. docs/api.md is the integrator's guide.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from services.notifications.domain import MailingAudience, describe_audience
from services.notifications.mailings import Mailings
from services.notifications.mailings_web import MailingsDep
from shared import osdi
from shared.auth import OrganiserScope, require_api_token
from shared.osdi import CURIES, MAX_PER_PAGE, Page, PerPage, api_url, bare_id, collection, hal, without_paging

router = osdi.router()
ApiCaller = Annotated[OrganiserScope, Depends(require_api_token)]
STATUSES = {"draft": "draft", "scheduled": "scheduled", "sending": "sending", "sent": "sent"}


def _target(m: Any, audience: MailingAudience, names: dict[str, str]) -> str:
    """Who the mailing is for, in words: the audience chosen, or everyone in the scope it was written in."""
    if audience != MailingAudience():
        return describe_audience(audience, names)
    if m.scope_type == "network":
        return "Everyone in the network"
    return f"Everyone in {names.get(m.scope_id) or 'the ' + m.scope_type}"


def _message(request: Request, m: Any, statistics: dict[str, int], names: dict[str, str]) -> dict[str, Any]:
    api = api_url(request)
    audience = MailingAudience.from_json(m.audience)
    message: dict[str, Any] = {
        "identifiers": osdi.identifiers(m.id),
        "origin_system": "Groundswell",
        "subject": m.subject,
        "body": m.body,
        "status": STATUSES.get(m.status, m.status),
        "created_date": m.created_at.isoformat(),
        "modified_date": m.updated_at.isoformat(),
        "targets": [{"name": _target(m, audience, names)}],
        "total_targeted": m.queued,
        "statistics": {
            "sent": statistics.get("sent", 0),
            "opened": None,
            "clicked": statistics.get("clicked", 0),
            "bounced": statistics.get("bounced", 0),
            "unsubscribed": statistics.get("unsubscribed", 0),
        },
        "_links": {"self": {"href": f"{api}/messages/{m.id}"}, "curies": CURIES},
    }
    if m.send_at is not None:
        message["scheduled_start_date"] = m.send_at.isoformat()
    if m.started_at is not None:
        message["sent_start_date"] = m.started_at.isoformat()
    return message


async def _render(
    request: Request, mailings: Mailings, caller: OrganiserScope, rows: list[Any]
) -> list[dict[str, Any]]:
    async with mailings.uows.begin() as uow:
        statistics = await mailings.statistics(uow.session, rows)
        names = {u.unit_id: u.name for u in await mailings.units_for(uow.session, caller)}
    return [_message(request, m, statistics.get(m.id, {}), names) for m in rows]


@router.get("/messages", responses=osdi.page_of("messages"))
async def list_messages(
    request: Request, caller: ApiCaller, mailings: MailingsDep, page: Page = 1, per_page: PerPage = MAX_PER_PAGE
) -> JSONResponse:
    """The mailings the key's scope covers, newest first."""
    async with mailings.uows.begin() as uow:
        rows, total = await mailings.page_for(uow.session, caller, limit=per_page, offset=(page - 1) * per_page)
    items = await _render(request, mailings, caller, rows)
    return hal(collection(without_paging(request), "messages", items, total, page, per_page))


@router.get("/messages/{message_id}", responses=osdi.one("The message"))
async def get_message(request: Request, message_id: str, caller: ApiCaller, mailings: MailingsDep) -> JSONResponse:
    async with mailings.uows.begin() as uow:
        row = await mailings.get(uow.session, caller, bare_id(message_id))
    if row is None:
        osdi.refuse(404, "There is no message with that id that this API key may see")
    [item] = await _render(request, mailings, caller, [row])
    return hal(item)
