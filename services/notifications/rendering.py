"""Rendering emails from templates/email: once per email, or once for many recipients with holes (Stencil)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import escape

from services.notifications.wording import sign_off_lines

EMAIL_TEMPLATES = Path(__file__).parent / "templates" / "email"


class EmailRenderer:
    """The network's emails, each in a plain-text and an HTML part."""

    def __init__(self, network_name: str) -> None:
        self.network_name = network_name
        self.text_env = Environment(loader=FileSystemLoader(str(EMAIL_TEMPLATES)), undefined=StrictUndefined)
        self.html_env = Environment(
            loader=FileSystemLoader(str(EMAIL_TEMPLATES)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html"]),
        )

    def render(self, template: str, **context: Any) -> tuple[str, str]:
        """The plain-text and HTML parts of email `template` (templates/email/<template>.txt and .html), with the
        network's name and sign-off from the organisers' wording (`wording=`, wording.py; else the configured
        name)."""
        context = {**self.signature(context.pop("wording", None)), **context}
        return (
            self.text_env.get_template(f"{template}.txt").render(context),
            self.html_env.get_template(f"{template}.html").render(context),
        )

    def signature(self, wording: dict[str, str] | None) -> dict[str, object]:
        """The network's name and the sign-off's lines, as every email's template gets them."""
        if wording is None:
            return {"network_name": self.network_name, "sign_off": ["With thanks,", self.network_name]}
        return {"network_name": wording["network_name"], "sign_off": sign_off_lines(wording)}

    def stencil(self, template: str, slots: tuple[str, ...], **context: object) -> Stencil:
        """Email `template` rendered once, with the per-recipient `slots` left as holes for `Stencil.fill` (a slot
        may also be put inside another value of the context with `hole`)."""
        marks = {slot: hole(slot) for slot in slots}
        text, html = self.render(template, **context, **marks)
        return Stencil(_split(text), _split(html))


_STENCIL_MARK = uuid.uuid4().hex
_STENCIL_RE = re.compile(f"@@{_STENCIL_MARK}:(\\w+)@@")


def hole(slot: str) -> str:
    """Where `slot` goes in a stencil: plain ASCII letters, kept as they are by Markdown and escaping."""
    return f"@@{_STENCIL_MARK}:{slot}@@"


def _split(rendered: str) -> list[str]:
    """Literal text and slot names, alternating (even indexes literal)."""
    return _STENCIL_RE.split(rendered)


class Stencil:
    """An email rendered once for many recipients: filling it in is string joins, not a template render.
    A slot's value is put in as the template puts a plain `{{ slot }}`: as it is in the text part, escaped in
    the HTML part. (Check a template with `matches` before relying on that.)"""

    def __init__(self, text_parts: list[str], html_parts: list[str]) -> None:
        self.text_parts = text_parts
        self.html_parts = html_parts

    def fill(self, **values: str) -> tuple[str, str]:
        return _fill(self.text_parts, values, False), _fill(self.html_parts, values, True)

    def matches(self, renderer: EmailRenderer, template: str, values: dict[str, str], **context: object) -> bool:
        """Whether filling in `values` gives exactly what rendering the template with them gives."""
        return self.fill(**values) == renderer.render(template, **context, **values)


def _fill(parts: list[str], values: dict[str, str], html: bool) -> str:
    out = parts[:]
    for i in range(1, len(out), 2):
        value = values[out[i]]
        out[i] = str(escape(value)) if html else value
    return "".join(out)
