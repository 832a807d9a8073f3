"""What a new installation starts with: the join form's choices, spam limits, and the Midlands demo network.

Migrations 0004, 0005 and 0010 insert these rows; organisers change them afterwards in their pages.
Seeded units get ids derived from their slugs (uuid5), so the demo and its tests can name them.
Changing a value here changes no existing database: write a new migration for that.

The postcode table (`postcode_districts`) maps a prefix of a UK postcode to a region and the nearest
local group: either a whole outward code ("B15", "CV32") or a postcode area, letters only ("B", "NG").
The longest prefix that matches a postcode's outward code wins, so an area row is the fallback for
every district of that area that has no row of its own.
"""

from __future__ import annotations

import uuid

SEED_NAMESPACE = uuid.UUID("6f1c2d0e-4b7a-4e51-9a43-3d2b8f9c1a10")


def unit_id(kind: str, slug: str) -> str:
    """The id of a seeded region, group, sub-team or partner organisation."""
    return str(uuid.uuid5(SEED_NAMESPACE, f"{kind}:{slug}"))


INTERESTS: tuple[tuple[str, str], ...] = (
    ("racism-in-healthcare", "Racism in healthcare"),
    ("racism-at-work", "Racism at work"),
    ("racism-in-policing", "Racism in policing"),
    ("hostile-environment", "The hostile environment immigration policy"),
    ("racism-in-education", "Racism in schools, colleges and universities"),
)

ENGAGEMENT_LEVELS: tuple[tuple[str, str], ...] = (
    ("informed", "Keep me informed"),
    ("take_action", "I'll take action"),
    ("organise", "I'll help organise"),
)

CONSENT_WORDINGS: tuple[tuple[str, str], ...] = (
    (
        "email-2026-11",
        "I agree that the network may email me about its campaigns, meetings and ways to get involved. "
        "I can unsubscribe at any time with one click.",
    ),
)

# What the home page says about the network until its organisers write their own.
NETWORK_DESCRIPTION = (
    "We are a network of people across the country working together against racism: in our workplaces, "
    "schools, hospitals and streets. Local groups meet, campaign and support one another."
)

def _unwrapped(text: str) -> str:
    """Paragraphs each on one line (as organisers will edit them), separated by blank lines."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.strip().split("\n\n"))


# Privacy notice version 1: paragraphs separated by blank lines, "## " starts a heading.
PRIVACY_NOTICE = _unwrapped("""## Who we are

This network is run by volunteer organisers. They decide how the information you give us is used, and they are
the people to ask about it.

## What we collect

When you join, we keep your name, email address and postcode, how involved you want to be, and anything else
you choose to tell us (interests, skills, the time you have, your local group, an organisation you belong to).
When you reply to a meeting or take part in a campaign, we keep that you did so. We keep a record of when you
agreed to hear from us and the wording you agreed to.

## Why we collect it

To keep you informed about campaigns and meetings you asked to hear about, to put you in touch with your local
group, and to count how many people act together. We never sell your data or share it for marketing.

## Who sees it

Only organisers, and only for the region or group they look after. Your name and email address are stored
encrypted; a few trusted services that run this website (our email sender, our hosting) process them for us.

## Getting or erasing your data

Every email we send has a link to your preferences, where you can download everything we hold about you,
leave the network, or have your data erased. Erasing destroys the key to your encrypted details, so even old
copies become unreadable.

## Unsubscribing

Every email has a one-click unsubscribe link. You can also choose which kinds of email you want on your
preferences page.

## Contact

Reply to any email we send you, or write to the address our emails come from. You can also complain to the
Information Commissioner's Office (ico.org.uk).
""")

# name, max_count, window in seconds
RATE_LIMITS: tuple[tuple[str, int, int], ...] = (
    ("join-per-ip", 30, 600),
    ("join-per-email", 5, 3600),
    ("signin-per-ip", 30, 600),
    ("signin-per-account", 10, 900),
)

# The operator's own machine (the demo loader, tests) is never limited.
TRUSTED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("127.0.0.0/8", "this machine (loopback)"),
    ("::1/128", "this machine (loopback)"),
)

# -- the Midlands demo network ---------------------------------------------------------------------

REGIONS: tuple[tuple[str, str], ...] = (
    ("birmingham-black-country", "Birmingham and the Black Country"),
    ("coventry-warwickshire", "Coventry and Warwickshire"),
    ("east-midlands", "East Midlands"),
)

# slug, name, region slug
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("birmingham-central", "Birmingham Central", "birmingham-black-country"),
    ("birmingham-south", "Birmingham South", "birmingham-black-country"),
    ("handsworth-perry-barr", "Handsworth and Perry Barr", "birmingham-black-country"),
    ("wolverhampton", "Wolverhampton", "birmingham-black-country"),
    ("walsall", "Walsall", "birmingham-black-country"),
    ("dudley", "Dudley", "birmingham-black-country"),
    ("coventry", "Coventry", "coventry-warwickshire"),
    ("warwick-leamington", "Warwick and Leamington", "coventry-warwickshire"),
    ("nuneaton-bedworth", "Nuneaton and Bedworth", "coventry-warwickshire"),
    ("nottingham", "Nottingham", "east-midlands"),
    ("leicester", "Leicester", "east-midlands"),
    ("derby", "Derby", "east-midlands"),
)

SUBTEAMS: tuple[tuple[str, str, str], ...] = (
    ("media", "Media and communications", "Press releases, social media, photos at actions"),
    ("legal-observers", "Legal observers", "Trained observers at protests and stop-and-search monitoring"),
    ("outreach", "Events and outreach", "Stalls, talks and meetings in the community"),
    ("research", "Research and policy", "Evidence for our campaigns"),
    ("welcome", "Welcome team", "Calls and coffees with people who have just joined"),
)

PARTNERS: tuple[tuple[str, str], ...] = (
    ("midlands-migrant-support", "Midlands Migrant Support"),
    ("coventry-faith-forum", "Coventry Faith Forum"),
    ("nottingham-tenants-union", "Nottingham Tenants Union"),
)

# prefix (area letters or outward code), region slug, group slug
POSTCODE_DISTRICTS: tuple[tuple[str, str, str], ...] = (
    ("B", "birmingham-black-country", "birmingham-central"),
    *(
        (d, "birmingham-black-country", "birmingham-south")
        for d in ("B13", "B14", "B17", "B28", "B29", "B30", "B31", "B38", "B45")
    ),
    *((d, "birmingham-black-country", "handsworth-perry-barr") for d in ("B19", "B20", "B21", "B42", "B43", "B44")),
    ("WV", "birmingham-black-country", "wolverhampton"),
    ("WS", "birmingham-black-country", "walsall"),
    ("DY", "birmingham-black-country", "dudley"),
    ("CV", "coventry-warwickshire", "coventry"),
    *((d, "coventry-warwickshire", "warwick-leamington") for d in ("CV31", "CV32", "CV33", "CV34", "CV35")),
    *((d, "coventry-warwickshire", "nuneaton-bedworth") for d in ("CV10", "CV11", "CV12")),
    ("NG", "east-midlands", "nottingham"),
    ("LE", "east-midlands", "leicester"),
    ("DE", "east-midlands", "derby"),
)
