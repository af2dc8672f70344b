"""Controllable, safer replies: steer generation in emotionally sensitive contexts and judge it independently.

``prompts`` builds reply prompts (raw text or chat), ``judges`` scores replies without the steered
model, ``intervals`` gives item-clustered intervals and judge agreement, ``study`` runs the
dose-response, capability-retention and safety measures.
"""

from emolens.control.judges import JUDGES, Judge, judge_texts, make_judges
from emolens.control.study import ControlConfig, ControlResult, run_control
from emolens.control.verdict import verdict

__all__ = ["JUDGES", "ControlConfig", "ControlResult", "Judge", "judge_texts", "make_judges", "run_control", "verdict"]
