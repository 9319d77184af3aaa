"""qpvhub's OGC API: tipg's application, with each collection's title and description taken from the
PostgreSQL comments the publication writes (tipg lists tables by name only).

Runs in the API server's own virtualenv (`.venv-api`, tipg only, no qpvhub): `uvicorn qpvhub_api_app:app
--app-dir include/api`, the environment from `qpvhub.api.api_environment` (schema `pub`, role qpvhub_api).
"""

from __future__ import annotations

from tipg.main import app

COMMENTS = (
    "SELECT n.nspname || '.' || c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'v', 'm')"
)


class Describe:
    """ASGI middleware: once per catalogue (tipg may refresh it), set titles and descriptions."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.described: int | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            state = scope["app"].state
            catalog = getattr(state, "collection_catalog", None)
            if catalog is not None and self.described != id(catalog):
                schemas = sorted({c.split(".", 1)[0] for c in catalog["collections"]})
                async with state.pool.acquire() as conn:
                    comments = dict(await conn.fetch(COMMENTS, schemas))
                for cid, col in catalog["collections"].items():
                    text = comments.get(cid)
                    if text:
                        col.description = text
                        col.title = text.split(" — ")[0].split(". ")[0][:120]
                self.described = id(catalog)
        await self.inner(scope, receive, send)


app.add_middleware(Describe)
