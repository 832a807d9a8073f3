from pathlib import Path

from services.notifications.cli import commands
from shared.cli import service_main

raise SystemExit(
    service_main("notifications", Path(__file__).parent, "services.notifications.main:create_app", extra=commands)
)
