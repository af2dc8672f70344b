"""Controllable, safer replies: steer generation in emotionally sensitive contexts and judge it independently.

``prompts`` builds reply prompts (raw text or chat), ``judges`` scores replies without the steered
model, ``intervals`` gives item-clustered intervals and judge agreement, ``study`` runs the
dose-response, capability-retention and safety measures.
"""
