"""TOTP enrolment by QR code (issue #16): the set-password page draws the code as an SVG on the server (nothing
fetched, no script), with the key in text beside it for those who cannot scan; the command line prints it too."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

import segno

from services.membership import enrolment_qr
from tests.support.accounts import membership_cli


async def test_the_set_password_page_shows_the_enrolment_as_a_qr_code_and_as_a_key(gateway):
    email = f"qr-enrolment-{uuid.uuid4().hex[:8]}@example.org"
    output = await membership_cli("create-organiser", "--email", email, "--scope", "network")
    secret = re.search(r"^TOTP secret:\s+(\S+)$", output, re.M).group(1)  # type: ignore[union-attr]
    uri = re.search(r"^otpauth URI:\s+(\S+)$", output, re.M).group(1)  # type: ignore[union-attr]
    link = re.search(r"^set password link:\s+(\S+)$", output, re.M).group(1)  # type: ignore[union-attr]
    assert "▀" in output or "▄" in output  # the terminal's QR code

    page = await gateway.get(urlsplit(link).path + "?" + urlsplit(link).query)
    assert page.status_code == 200
    svg = re.search(r"<svg .*?</svg>", page.text, re.S)
    assert svg and 'role="img"' in svg.group(0) and "scan it with your authenticator app" in svg.group(0)
    assert svg.group(0) == str(enrolment_qr.svg(uri))  # the code of this account's own otpauth URI
    assert secret in page.text and "<script" not in page.text


def test_the_qr_code_encodes_the_otpauth_uri_at_a_size_a_phone_reads():
    uri = "otpauth://totp/Groundswell%20Network:someone%40example.org?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    code = segno.make(uri, error="m")
    assert code.designator.endswith("-M") and code.version <= 10
    assert enrolment_qr.svg(uri).count("<svg") == 1 and "█" in enrolment_qr.terminal(uri)
