"""The settings check: before any number, what each matched pair of layers is configured to do
(``parity.engine.settings``); it needs both live models at once, so ``record`` / ``compare`` leave it out."""
from __future__ import annotations

from typing import Any

from ddpm_core.contract import Side
from parity.engine.checks.base import Check
from parity.engine.settings import SettingMismatch, check_settings


class Settings(Check):
    name = "settings"

    def live(self, side_t: Side[Any, Any], model_t: Any, side_m: Side[Any, Any],
             model_m: Any) -> tuple[list[SettingMismatch], int]:
        return check_settings(side_t, model_t, side_m, model_m)
