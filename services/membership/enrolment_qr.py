"""The TOTP enrolment as a QR code an authenticator app scans (segno, a pure-Python QR library): an SVG drawn on
the server for the set-password page (no script, nothing fetched), and block characters for a terminal."""

from __future__ import annotations

import io

import segno
from markupsafe import Markup


def svg(otpauth_uri: str) -> Markup:
    """An inline SVG of the QR code, with a text alternative for screen readers."""
    code = segno.make(otpauth_uri, error="m")
    drawn = code.svg_inline(scale=5, border=4, dark="#0b0c0c", light="#ffffff", svgclass="totp-qr",
                            title="QR code of your sign-in key: scan it with your authenticator app")
    return Markup(drawn.replace("<svg ", '<svg role="img" aria-labelledby="totp-qr-title" ', 1)
                  .replace("<title>", '<title id="totp-qr-title">', 1))


def terminal(otpauth_uri: str) -> str:
    """The QR code in block characters, for `create-organiser` to print (two rows of modules per line)."""
    out = io.StringIO()
    segno.make(otpauth_uri, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue()
