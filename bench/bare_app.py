"""The baseline of join ingest: a bare FastAPI endpoint that reads the same form and answers the same redirect,
storing nothing. Served exactly as a service is (shared/cli.py's uvicorn settings, one process).

Run: python -m bench.bare_app PORT
"""

from __future__ import annotations

import sys

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse


def create_app() -> FastAPI:
    app = FastAPI(title="bench: bare endpoint")

    @app.post("/join")
    async def join(request: Request) -> RedirectResponse:
        form = await request.form()
        _ = {key: form.get(key) for key in ("name", "email", "postcode", "email_consent")}
        return RedirectResponse("/join/thanks", status_code=303)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        "bench.bare_app:create_app",
        factory=True,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
    )
