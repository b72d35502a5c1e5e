"""``GET /docs``: the API described on one self-contained HTML page.

FastAPI's default page loads Swagger UI's JavaScript and CSS from a CDN, so it is blank
on a machine without internet access (where a model server often runs). This page is
built on the server from the app's own OpenAPI schema: no script, no remote asset.
"""

from __future__ import annotations

import html
import json


def docs_html(openapi: dict) -> str:
    """Every route with its summary, description, request body schema and responses."""
    esc = html.escape
    title = esc(f"{openapi.get('info', {}).get('title', 'API')} "
                f"{openapi.get('info', {}).get('version', '')}".strip())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "pre{background:#f4f4f4;padding:.6em;overflow:auto}code{font-weight:bold}"
             "</style></head><body>",
             f"<h1>{title}</h1><p>The machine-readable schema is "
             "<a href='/openapi.json'>/openapi.json</a>.</p>"]
    for path, methods in sorted(openapi.get("paths", {}).items()):
        for method, op in methods.items():
            parts.append(f"<h2><code>{esc(method.upper())} {esc(path)}</code></h2>")
            if op.get("summary"):
                parts.append(f"<p><b>{esc(op['summary'])}</b></p>")
            if op.get("description"):
                parts.append(f"<p>{esc(op['description'])}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                parts.append("<p>Request body (JSON):</p><pre>"
                             + esc(json.dumps(body.get("schema", {}), indent=2)) + "</pre>")
            codes = ", ".join(sorted(op.get("responses", {})))
            if codes:
                parts.append(f"<p>Responses: {esc(codes)}</p>")
    schemas = openapi.get("components", {}).get("schemas", {})
    if schemas:
        parts.append("<h2>Schemas</h2>")
        for name, schema in sorted(schemas.items()):
            parts.append(f"<h3>{esc(name)}</h3><pre>{esc(json.dumps(schema, indent=2))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
