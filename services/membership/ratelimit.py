"""Membership's rate limits, by name (their settings are `rate_limits` rows seeded by migrations). The limiter
itself is shared by every service: shared/ratelimit.py."""

from __future__ import annotations

from shared.ratelimit import Attempt, RateLimiter, Verdict, _judge

__all__ = ["JOIN_PER_EMAIL", "JOIN_PER_IP", "MEMBER_REQUEST_PER_IP", "MEMBER_REQUEST_PER_MEMBER", "SIGNIN_PER_ACCOUNT",
           "SIGNIN_PER_IP", "Attempt", "RateLimiter", "Verdict", "_judge"]

JOIN_PER_IP = "join-per-ip"
JOIN_PER_EMAIL = "join-per-email"
SIGNIN_PER_IP = "signin-per-ip"
SIGNIN_PER_ACCOUNT = "signin-per-account"
# A download or an erasure asked for with a member's link emails a confirmation: bounded per member (a forwarded
# link cannot flood its owner's inbox) and per connection.
MEMBER_REQUEST_PER_MEMBER = "member-request-per-member"
MEMBER_REQUEST_PER_IP = "member-request-per-ip"
