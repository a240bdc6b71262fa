"""The library's error API is importable from the package root, whatever module defines it."""
import optkit
from optkit.common import errors


def test_root_exports_are_the_library_errors():
    for name in ("OptkitError", "InputError", "PassFailed", "VerificationFailed"):
        assert getattr(optkit, name) is getattr(errors, name)
    assert issubclass(optkit.VerificationFailed, optkit.OptkitError) and optkit.VerificationFailed.exit_code == 3
