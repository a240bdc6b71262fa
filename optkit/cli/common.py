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


def ci_output_options(command):  # noqa: ANN001, ANN201
    """--junit FILE and --summary FILE (verify and run): the CI views of the verification report."""
    command = click.option("--summary", "summary_path", type=click.Path(dir_okay=False),
                           help="Write a short Markdown summary (for a pull-request comment).")(command)
    return click.option("--junit", "junit_path", type=click.Path(dir_okay=False),
                        help="Write JUnit XML: one test case per artifact x runtime x gate.")(command)
