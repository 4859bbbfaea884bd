"""``batchgen sim``: run the simulator until Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from batchgen.sim.server import SimServer
from batchgen.sim.state import SimConfig


async def _serve(server: SimServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        click.echo(f"base_url: {server.base_url}")
        click.echo(f"api_key: {server.api_key}")
        click.echo(f"account: {server.sim.account_id}", err=True)
        click.echo("simulator running; Ctrl-C to stop", err=True)
        sys.stdout.flush()
        await stop.wait()


# Every flag that sets a SimConfig field takes its default from SimConfig, so ``--help`` shows
# what the simulator really does (tests/test_docs.py checks them, value by value).
_D = SimConfig()


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8787, show_default=True, type=int, help="Port (0 = any free).")
@click.option(
    "--credits", default=_D.credits, show_default=True, type=int, help="Starting balance."
)
@click.option(
    "--rate",
    default=_D.rate,
    show_default=True,
    type=float,
    help="Requests/s per account; 0 = off.",
)
@click.option(
    "--burst", default=_D.burst, type=int, help="Token bucket size [default: ceil(rate)]."
)
@click.option(
    "--no-rate-headers",
    is_flag=True,
    default=not _D.rate_limit_headers,
    help="Omit X-RateLimit-* headers on 429.",
)
@click.option(
    "--latency", default=_D.latency, show_default=True, type=float, help="Median seconds per task."
)
@click.option(
    "--latency-by-model",
    default="",
    metavar="MODEL=SECONDS,...",
    help="Median seconds per task of some models (the others use --latency).",
)
@click.option(
    "--latency-sigma",
    default=_D.latency_sigma,
    show_default=True,
    type=float,
    help="Sigma of the log-normal latency.",
)
@click.option(
    "--queue-time",
    default=_D.queue_time,
    show_default=True,
    type=float,
    help="Median queued seconds.",
)
@click.option(
    "--failure-rate",
    default=_D.failure_rate,
    show_default=True,
    type=float,
    help="Tasks that fail.",
)
@click.option(
    "--error-rate", default=_D.error_rate, show_default=True, type=float, help="500 answers."
)
@click.option(
    "--html-error-rate", default=_D.html_error_rate, show_default=True, type=float, help="502 HTML."
)
@click.option(
    "--drop-rate", default=_D.drop_rate, show_default=True, type=float, help="Dropped, no effect."
)
@click.option(
    "--drop-after-rate",
    default=_D.drop_after_rate,
    show_default=True,
    type=float,
    help="Dropped after effect.",
)
@click.option(
    "--stuck-rate", default=_D.stuck_rate, show_default=True, type=float, help="Tasks never end."
)
@click.option(
    "--slow-rate", default=_D.slow_rate, show_default=True, type=float, help="Requests slowed."
)
@click.option(
    "--slow-seconds",
    default=_D.slow_seconds,
    show_default=True,
    type=float,
    help="Delay of a slowed request.",
)
@click.option(
    "--create-status",
    default=str(_D.create_status),
    show_default=True,
    type=click.Choice(["200", "201", "202"]),
    help="Status of a successful create.",
)
@click.option(
    "--insufficient-status",
    default=_D.insufficient_status,
    show_default=True,
    type=int,
    help="Status of insufficient_credits.",
)
@click.option(
    "--image-size",
    "image_long_side",
    default=_D.image_long_side,
    show_default=True,
    type=int,
    help="Long side of result images, pixels.",
)
@click.option(
    "--media-delay",
    default=_D.media_delay,
    show_default=True,
    type=float,
    help="Seconds before a result image is served.",
)
@click.option(
    "--api-key", default=_D.api_key, help="Use this key (rvya_sk_...) instead of a new one."
)
@click.option("--seed", default=_D.seed, type=int, help="Seed of every random choice.")
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
def sim_command(
    host: str,
    port: int,
    credits: int,
    rate: float,
    burst: int | None,
    no_rate_headers: bool,
    latency: float,
    latency_by_model: str,
    latency_sigma: float,
    queue_time: float,
    failure_rate: float,
    error_rate: float,
    html_error_rate: float,
    drop_rate: float,
    drop_after_rate: float,
    stuck_rate: float,
    slow_rate: float,
    slow_seconds: float,
    create_status: str,
    insufficient_status: int,
    image_long_side: int,
    media_delay: float,
    api_key: str | None,
    seed: int | None,
    access_log: bool,
) -> None:
    """Run a local Rivya API v1 simulator.

    Prints its base URL and a ready API key on stdout, then serves until Ctrl-C.

    Example: batchgen sim --port 8787 --latency 2 --failure-rate 0.05 --rate 20
    """
    if api_key is not None and not api_key.startswith("rvya_sk_"):
        raise click.BadParameter("API keys start with rvya_sk_", param_hint="--api-key")
    config = SimConfig(
        credits=credits,
        rate=rate if rate else None,
        burst=burst,
        rate_limit_headers=not no_rate_headers,
        create_status=int(create_status),
        insufficient_status=insufficient_status,
        latency=latency,
        latency_by_model=_latency_by_model(latency_by_model),
        latency_sigma=latency_sigma,
        queue_time=queue_time,
        failure_rate=failure_rate,
        error_rate=error_rate,
        html_error_rate=html_error_rate,
        drop_rate=drop_rate,
        drop_after_rate=drop_after_rate,
        stuck_rate=stuck_rate,
        slow_rate=slow_rate,
        slow_seconds=slow_seconds,
        image_long_side=image_long_side,
        media_delay=media_delay,
        api_key=api_key,
        seed=seed,
    )
    server = SimServer(config, host=host, port=port, access_log=access_log)
    if access_log:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        asyncio.run(_serve(server))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc


def _latency_by_model(text: str) -> dict[str, float]:
    """``qwen-image=3,qwen2-image=15`` as ``{"qwen-image": 3.0, "qwen2-image": 15.0}``."""
    out: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        model, sep, value = item.partition("=")
        try:
            seconds = float(value) if sep and model.strip() else -1.0
        except ValueError:
            seconds = -1.0
        if seconds < 0 or seconds != seconds:
            raise click.BadParameter(
                f"{item!r} is not MODEL=SECONDS (e.g. qwen-image=3,qwen2-image=15)",
                param_hint="--latency-by-model",
            )
        out[model.strip()] = seconds
    return out


if __name__ == "__main__":  # pragma: no cover
    sim_command()
