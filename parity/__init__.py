"""The tools that compare the twins: weight conversion (convert), and the parity checks.

Kept empty so that ``python -m parity.<tool>`` imports only what that tool needs. The parity API
(``parity.check_models``, ``parity.assert_parity``, ``parity.assert_close``, ``parity.Options``, parity/api.py) is loaded on first use, so
``import parity`` imports no framework.
"""
_API = ("Options", "assert_close", "assert_parity", "check_models", "make_spec")


def __getattr__(name: str):
    if name in _API:
        from parity import api

        return getattr(api, name)
    raise AttributeError(f"module 'parity' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
