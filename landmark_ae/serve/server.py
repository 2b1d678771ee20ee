"""Running `landmark-ae serve`: load the embed run once, listen, print the url, stop cleanly.

SIGTERM and SIGINT stop accepting connections, let requests in flight finish (up to
`shutdown_s`), and end the command with exit code 0 and its run recorded complete.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
from pathlib import Path
from typing import Any

from aiohttp import web
from omegaconf import DictConfig

from landmark_ae.errors import UserError
from landmark_ae.retrieval.embed_run import resolve_embed_run
from landmark_ae.retrieval.retriever import Retriever
from landmark_ae.runs import write_run_record
from landmark_ae.serve.app import make_app

log = logging.getLogger("landmark_ae.serve")
TOKEN_ENV = "LANDMARK_AE_TOKEN"
SHUTDOWN_S = 5.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve_until_stopped(app: web.Application, host: str, port: int) -> str:
    """Listen on host:port, print `url<TAB>...` on stdout, serve until SIGTERM/SIGINT; returns the url."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}: choose another port "
                            "(port=0 picks a free one) or host") from None
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        url = f"http://{shown}:{bound[1]}"
        print(f"url\t{url}", flush=True)
        log.info("serving on %s (SIGTERM or Ctrl-C stops)", url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping: finishing the requests in flight")
        return url
    finally:
        await runner.cleanup()


def run_serve(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    token = cfg.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(cfg.host) and not token:
        raise UserError(f"host={cfg.host} lets other machines in: set token=<secret> (or {TOKEN_ENV}) so that every "
                        "request must carry `Authorization: Bearer <secret>`, or keep host=127.0.0.1")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    run = resolve_embed_run(cfg.embed_run, cfg.paths.output_dir)
    retriever = Retriever(run, cfg.checkpoint, cfg.device, cfg.batch_size)
    settings = {"k": cfg.k, "max_k": cfg.max_k, "max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms,
                "max_queue": cfg.max_queue, "max_body": int(cfg.max_body_mb * 2**20), "timeout_s": cfg.timeout_s}
    app = make_app(retriever, settings, token)
    write_run_record(run_dir, "serve", "running", embed_run=str(run.run_dir), model=run.meta["model"])
    url = asyncio.run(serve_until_stopped(app, cfg.host, cfg.port))
    write_run_record(run_dir, "serve", "complete", embed_run=str(run.run_dir), model=run.meta["model"], url=url)
    return {"run_dir": run_dir}
