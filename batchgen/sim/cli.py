"""``batchgen sim``: run the simulator until Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from batchgen.sim.server import SimServer
from batchgen.sim.state import SimConfig


async def _serve(server: SimServer, as_json: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        if as_json:  # one line, for scripts: $(batchgen sim --json &) or a read loop
            info = {
                "base_url": server.base_url,
                "api_key": server.api_key,
                "account": server.sim.account_id,
            }
            click.echo(json.dumps(info))
        else:
            click.echo(f"base_url: {server.base_url}")
            click.echo(f"api_key: {server.api_key}")
        click.echo(f"account: {server.sim.account_id}", err=True)
        click.echo("simulator running; Ctrl-C to stop", err=True)
        sys.stdout.flush()
        await stop.wait()


def _value_type(name: str) -> Any:
    """The type of a SimConfig field's value (``int`` for ``int | None``)."""
    hint = typing.get_type_hints(SimConfig)[name]
    return next((a for a in typing.get_args(hint) if a is not type(None)), hint)


def _param_name(f: dataclasses.Field[Any]) -> str:
    """The flag's parameter name: the field's, but ``no_...`` for a negated switch."""
    flag = f.metadata["flag"]
    return flag.lstrip("-").replace("-", "_") if f.metadata["negate"] and flag else f.name


def _knob_options(command: Callable[..., None]) -> Callable[..., None]:
    """One flag per :func:`~batchgen.sim.state.knob` field of SimConfig, its default and help
    taken from the field, so ``--help`` shows what the simulator really does."""
    for f in reversed(dataclasses.fields(SimConfig)):
        meta = f.metadata
        if "help" not in meta:
            continue
        name = meta["flag"] or "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"help": meta["help"], "show_default": meta["show_default"]}
        if meta["negate"]:
            kwargs.update(is_flag=True, default=not f.default, show_default=False)
        elif meta["choices"]:
            kwargs.update(type=click.Choice(meta["choices"]), default=str(f.default))
        else:
            kwargs.update(type=_value_type(f.name), default=f.default)
        command = click.option(name, _param_name(f), **kwargs)(command)
    return command


def _config(knobs: dict[str, Any]) -> SimConfig:
    """The SimConfig the flags ask for."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(SimConfig):
        if "help" not in f.metadata or _param_name(f) not in knobs:
            continue
        value, meta = knobs[_param_name(f)], f.metadata
        if meta["negate"]:
            value = not value
        elif meta["choices"]:
            value = _value_type(f.name)(value)
        elif meta["zero_is_none"] and not value:
            value = None
        values[f.name] = value
    return SimConfig(**values)


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8787, show_default=True, type=int, help="Port (0 = any free).")
@_knob_options
@click.option(
    "--latency-by-model",
    default="",
    metavar="MODEL=SECONDS,...",
    help="Median seconds per task of some models (the others use --latency).",
)
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print base_url, api_key and account as one JSON object on stdout.",
)
@click.option(
    "--catalog",
    "catalog_file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Serve and enforce this model catalog (a GET /api/v1/models answer) instead of the "
    "shipped one.",
)
def sim_command(
    host: str,
    port: int,
    access_log: bool,
    as_json: bool,
    catalog_file: str | None,
    latency_by_model: str,
    **knobs: Any,
) -> None:
    """Run a local Rivya API v1 simulator.

    Prints its base URL and a ready API key on stdout (--json: as one JSON object), then
    serves until Ctrl-C.

    Example: batchgen sim --port 8787 --latency 2 --failure-rate 0.05 --rate 20
    """
    api_key = knobs.get("api_key")
    if api_key is not None and not api_key.startswith("rvya_sk_"):
        raise click.BadParameter("API keys start with rvya_sk_", param_hint="--api-key")
    config = _config(knobs)
    config.latency_by_model = _latency_by_model(latency_by_model)
    catalog = None
    if catalog_file is not None:
        from batchgen.job.catalog import Catalog, CatalogError

        try:
            catalog = Catalog.from_file(Path(catalog_file))
        except (OSError, CatalogError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise click.BadParameter(
                f"{catalog_file}: {reason}; give a GET /api/v1/models answer saved as JSON",
                param_hint="--catalog",
            ) from None
    server = SimServer(config, host=host, port=port, access_log=access_log, catalog=catalog)
    if access_log:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        asyncio.run(_serve(server, as_json))
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
