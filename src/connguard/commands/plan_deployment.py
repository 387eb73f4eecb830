"""`connguard plan --deployment FILE.toml`: read and check the file at the edge, plan it, render it."""

from __future__ import annotations

import sys
import tomllib
from dataclasses import replace
from typing import NoReturn

import click
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table

from connguard.commands._common import EXIT_BY_STATUS, emit_json
from connguard.commands.plan import print_settings, print_verdict
from connguard.remedy.deployment import DeploymentPlan, plan_deployment
from connguard.remedy.deployment_file import DeploymentError, deployment_from
from connguard.remedy.plan import WARNING_LINE
from connguard.render.console import console_for

# flag (click parameter name) -> [server] field; a flag given on the command line wins over the file
SERVER_FLAGS = {"maxclients": "maxclients", "fd_limit": "fd_limit", "replicas": "replicas", "sentinels": "sentinels",
                "cluster_nodes": "cluster_nodes", "reserve": "reserve", "fd_margin": "fd_margin"}
APP_FLAGS = ("instances", "processes", "pool_size", "serverless", "concurrency", "per_invocation")


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE


def run_deployment(path: str, as_json: bool) -> NoReturn:
    ctx = click.get_current_context()
    clash = [n for n in APP_FLAGS if _given(ctx, n)]
    if clash:
        raise DeploymentError(f"--{clash[0].replace('_', '-')} describes one application; with --deployment the "
                              "file's [[component]] tables do")
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise DeploymentError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeploymentError(f"{path} is not valid TOML: {exc}") from None
    dep = deployment_from(doc)
    overrides = {field: ctx.params[flag] for flag, field in SERVER_FLAGS.items() if _given(ctx, flag)}
    if overrides:
        dep = replace(dep, server=replace(dep.server, **overrides))
    result = plan_deployment(dep)
    if as_json:
        emit_json(result.to_dict())
    else:
        render(result, console_for())
    sys.exit(int(EXIT_BY_STATUS[result.status]))


def render(result: DeploymentPlan, console: Console) -> None:
    print_verdict(console, result.status, result.total, result.maxclients, result.ratio)
    table = Table(show_edge=False)
    for col, justify in (("component", "left"), ("kind", "left"), ("instances", "right"), ("each", "right"),
                         ("connections", "right"), ("how (per instance)", "left"), ("largest safe", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in result.components:
        safe = f"instances {c.largest_safe_instances}"
        if c.knob and c.largest_safe_knob is not None:
            safe += f", {c.knob} {c.largest_safe_knob}"
        table.add_row(c.name, c.kind, str(c.instances), str(c.per_instance), str(c.connections), c.how, safe)
    for p in result.internal:
        table.add_row(p.name, "server", "", "", str(p.connections), p.how, "")
    table.add_row("[bold]total[/]", "", "", "", f"[bold]{result.total}[/]",
                  f"ratio {result.ratio:.3f} of maxclients {result.maxclients}", "")
    console.print(table)
    print_settings(console, result.recommended_maxclients, result.recommended_fd_limit)
    console.print("Largest safe: each component alone, the others unchanged, under the "
                  f"{WARNING_LINE:.0%} line.")
    for c in result.components:
        for note in c.notes:
            console.print(f"- {c.name}: {note}")
    for note in result.notes:
        console.print(f"- {note}")
