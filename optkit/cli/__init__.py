"""The optkit command line: a thin shell over the library.

Each command lives in its own module under ``optkit/cli/`` and only parses options, calls the
library, prints, and maps errors to exit codes: OptkitError -> 1 (one line on stderr, no
traceback), VerificationFailed -> 3, click usage errors -> 2.

May import: anything in optkit; nothing in optkit imports the CLI.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import click

from optkit import __version__
from optkit.common.errors import OptkitError

# name -> "module:function"; modules are imported only when the command is used or listed.
COMMANDS: dict[str, str] = {
    "export": "optkit.cli.export_cmd:export",
    "simplify": "optkit.cli.graph_cmds:simplify",
    "fold": "optkit.cli.graph_cmds:fold",
    "quantize": "optkit.cli.quantize_cmd:quantize",
    "build-engine": "optkit.cli.engine_cmd:build_engine",
    "verify": "optkit.cli.verify_cmd:verify",
    "bench": "optkit.cli.bench_cmd:bench",
    "run": "optkit.cli.run_cmd:run",
    "features": "optkit.cli.features_cmd:features",
    "serve": "optkit.cli.serve_cmd:serve",
    "loadtest": "optkit.cli.loadtest_cmd:loadtest",
    "doctor": "optkit.cli.doctor_cmd:doctor",
    "weights": "optkit.cli.weights_cmd:weights",
    "lut": "optkit.cli.lut_cmd:lut",
}


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


class OptkitGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._loadable(name)]

    @staticmethod
    def _loadable(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None or not self._loadable(name):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OptkitError as exc:
            if os.environ.get("OPTKIT_DEBUG"):
                raise
            from optkit.common.errors import ParameterError

            msg = str(exc)
            if isinstance(exc, ParameterError):  # name the parameter the way the user typed it: a flag
                from optkit.cli.common import cli_flag

                msg = exc.spelled(cli_flag(exc.param))
            click.echo(f"Error: {_one_line(msg)}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted; no partial output was kept.", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except OSError as exc:
            # A file-system error the library did not anticipate (a disk that fills up, a file
            # removed under our feet): still one line naming the file, not a traceback.
            if os.environ.get("OPTKIT_DEBUG"):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"Error: {where}{exc.strerror or _one_line(str(exc))}", err=True)
            ctx.exit(1)
        except MemoryError:
            click.echo("Error: out of memory", err=True)
            ctx.exit(1)
        except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
            if os.environ.get("OPTKIT_DEBUG"):
                raise
            click.echo(
                f"Error: internal error ({type(exc).__name__}: {_one_line(str(exc))[:300]}); "
                "rerun with OPTKIT_DEBUG=1 for a traceback and please report it",
                err=True,
            )
            ctx.exit(1)


@click.group(cls=OptkitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="optkit")
def cli() -> None:
    """optkit: export PyTorch models to ONNX, simplify, fold, quantise (int8/fp16), build
    TensorRT engines, and verify every artifact numerically against PyTorch.

    \b
    Quick start (the default recipe on the bundled voice model and data):
      optkit run -o optkit-out
    \b
    Step by step:
      optkit export voice-resnet -o model.onnx
      optkit simplify model.onnx -o model.sim.onnx
      optkit quantize model.sim.onnx -o model.int8.onnx --int8 --calibration calibration_data/calib
      optkit verify model.sim.onnx model.int8.onnx --reference model.reference.npz

    Exit codes: 0 ok, 1 input/user error, 2 usage error, 3 verification gate failed.
    Set OPTKIT_DEBUG=1 to see tracebacks.
    """


def main() -> None:
    cli(prog_name="optkit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
