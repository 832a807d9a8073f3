from pathlib import Path

from services.membership.cli import extra_commands
from shared.cli import service_main

raise SystemExit(
    service_main("membership", Path(__file__).parent, "services.membership.main:create_app", extra=extra_commands)
)
