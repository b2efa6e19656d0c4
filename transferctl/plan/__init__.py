"""The plan stage: what a config will train (`phases`), and how long it would take (`estimate`).

`make_plan` builds the classifier's architecture without weights and applies each phase's
freezing as training does; `transferctl plan` prints it. `estimate` times a few real steps.
"""

from transferctl.plan.phases import LayerPlan, PhasePlan, Plan, make_plan

__all__ = ["LayerPlan", "PhasePlan", "Plan", "make_plan"]
