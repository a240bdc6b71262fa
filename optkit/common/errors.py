"""Errors raised by the optkit library.

The library raises these; only the CLI layer turns them into one-line messages and exit
codes (1 for OptkitError, 3 for VerificationFailed), in the style of sqlite-utils.
"""
from __future__ import annotations


class OptkitError(Exception):
    """Base class: a problem the user can act on. The CLI prints it and exits 1."""

    exit_code = 1


class InputError(OptkitError):
    """A file, model, shape, dtype or value given by the user is unusable."""


class ParameterError(InputError):
    """An error about one parameter; ``template`` contains ``{name}`` where it is named."""

    def __init__(self, param: str, template: str):
        self.param = param
        self.template = template
        super().__init__(self.spelled(param))

    def spelled(self, name: str) -> str:
        # replace, not str.format: the rest of the message may hold braces (node names, values)
        return self.template.replace("{name}", name)


class MissingDependency(OptkitError):
    """An optional dependency (torch, openvino, tensorrt, ...) is not installed."""


class PassFailed(OptkitError):
    """A pass ran but could not produce or prove a correct artifact."""


class RecipeError(OptkitError):
    """A recipe file is malformed, names an unknown pass or parameter, etc."""


class RuntimeUnavailable(OptkitError):
    """A requested runtime / execution provider / GPU is not usable on this machine."""


class VerificationFailed(OptkitError):
    """At least one verification gate failed. The CLI exits 3."""

    exit_code = 3


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message ('' if it has none): library errors
    (protobuf, onnxsim, torch.onnx) are often many lines, and optkit reports one."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
