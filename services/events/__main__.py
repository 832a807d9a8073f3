from pathlib import Path

from shared.cli import service_main

raise SystemExit(service_main("events", Path(__file__).parent, "services.events.main:create_app"))
