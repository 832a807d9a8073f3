"""Every public action is confirmed by email in the organisers' own wording: they edit each confirmation on the
emails page (with a preview), and the next person to join, sign, pledge or write to their MP gets it so."""

from __future__ import annotations

import html
import uuid
from email.utils import parseaddr

from tests.support.emails import launch_campaign, take_action, write_to_mp
from tests.support.joins import join
from tests.support.mail import MailCatcher
from tests.support.organisers import organiser_headers
from tests.support.people import unique_email

PAGE = "/notifications/organise/emails"


def field(page: str, name: str) -> str:
    """The value of an input or textarea on our own form."""
    marker = f'name="{name}" value="'
    if marker in page:
        return html.unescape(page.split(marker, 1)[1].split('"', 1)[0])
    after = page.split(f'name="{name}"', 1)[1]
    return html.unescape(after.split(">", 1)[1].split("</textarea>", 1)[0])


async def test_each_confirmation_arrives_in_the_wording_the_organisers_saved(gateway, mail: MailCatcher):
    organiser = organiser_headers()
    before = await gateway.get(PAGE, headers=organiser)
    assert before.status_code == 200
    keys = ["network_name", "sender_name", "sign_off", "digest_intro"] + [
        f"{kind}_{part}" for kind in ("welcome", "petition_signed", "pledge_received", "mp_letter_copy")
        for part in ("subject", "body")
    ]  # fmt: skip
    original = {k: field(before.text, k) for k in keys}
    run = uuid.uuid4().hex[:6]
    edited = {
        **original,
        "sender_name": f"Organising team {run}",
        "sign_off": "In solidarity,\n{network_name}",
        "welcome_subject": f"Hello {{first_name}} ({run})",
        "welcome_body": f"Our own welcome {run}, {{first_name}}.\n\nSee you soon.",
        "petition_signed_subject": f"Signed {run}: {{campaign_title}}",
        "petition_signed_body": f"Our petition words {run}, {{first_name}}.",
        "pledge_received_subject": f"Pledged {run}: {{campaign_title}}",
        "pledge_received_body": f"Our pledge words {run}, {{first_name}}.",
        "mp_letter_copy_subject": f"Sent to {{mp_name}} ({run})",
        "mp_letter_copy_body": f"Our letter words {run}: {{mp_name}} has it.",
    }

    preview = await gateway.post(PAGE, data={**edited, "action": "preview"}, headers=organiser)
    assert preview.status_code == 200
    shown = html.unescape(preview.text)
    for heading, words in (
        ("Welcome, when someone joins", f"Our own welcome {run}, Ada."),
        ("Petition signed", f"Our petition words {run}, Ada."),
        ("Pledge received", f"Our pledge words {run}, Ada."),
        ("Letter sent to an MP (the writer's copy)", f"Our letter words {run}: Chris Holloway has it."),
    ):
        assert heading in shown and words in shown, heading

    try:
        saved = await gateway.post(PAGE, data={**edited, "action": "save"}, headers=organiser)
        assert saved.status_code == 303

        joiner, signer, pledger = (unique_email(p) for p in ("confirm-join", "confirm-sign", "confirm-pledge"))
        writer, mp = unique_email("confirm-writer"), unique_email("confirm-mp")
        assert await join(gateway, joiner, name="Ada Okafor") == 303
        campaign = await launch_campaign(gateway)
        await take_action(gateway, campaign, "petition", name="Ada Okafor", email=signer)
        await take_action(gateway, campaign, "pledge", name="Ada Okafor", email=pledger, pledge_text="I will.")
        await write_to_mp(writer, mp)

        expected = {
            joiner: (f"Hello Ada ({run})", f"Our own welcome {run}, Ada."),
            signer: (f"Signed {run}: {campaign['title']}", f"Our petition words {run}, Ada."),
            pledger: (f"Pledged {run}: {campaign['title']}", f"Our pledge words {run}, Ada."),
            writer: (f"Sent to Chris Holloway ({run})", f"Our letter words {run}: Chris Holloway has it."),
        }
        for to, (subject, words) in expected.items():
            [email] = await mail.wait_for(to, timeout=60)
            assert email["subject"] == subject
            assert parseaddr(email["from"])[0] == f"Organising team {run}"
            assert words in email["text"] and words in html.unescape(email["html"])
            assert "In solidarity,\n" in email["text"] and "In solidarity,<br>" in email["html"]
    finally:
        restored = await gateway.post(PAGE, data={**original, "action": "save"}, headers=organiser)
        assert restored.status_code == 303
