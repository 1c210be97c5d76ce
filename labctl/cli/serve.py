"""`labctl web`: the dashboard and REST API."""

from __future__ import annotations

import click

from labctl.cli import App, cli


@cli.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.pass_obj
def web_cmd(app: App, host: str, port: int) -> None:
    """Serve the web dashboard and the REST API (/api/v1) until interrupted."""
    from labctl.web import serve

    serve(app.config, host, port)
