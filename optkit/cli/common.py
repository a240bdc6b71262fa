"""Option parsers and printing helpers shared by the command modules."""
from __future__ import annotations

import click


def parse_shape(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        dims = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a shape like 1,1,40,241") from None
    if not dims or any(d <= 0 for d in dims):
        raise click.BadParameter(f"{value!r} is not a shape like 1,1,40,241")
    return dims


def shape_option(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    return parse_shape(value)


def csv_option(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(v.strip() for v in value.split(",") if v.strip())


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)
