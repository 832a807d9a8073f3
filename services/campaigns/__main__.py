from pathlib import Path

from services.campaigns.cli import extra_commands
from shared.cli import service_main

raise SystemExit(
    service_main("campaigns", Path(__file__).parent, "services.campaigns.main:create_app", extra=extra_commands)
)
