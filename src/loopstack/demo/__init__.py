"""`loopstack demo`: the closed loop on generated card transactions, end to end, in about a minute.

In a fresh project folder the demo generates card transactions (a daily and
weekly rhythm, a data drift from day 34 and a concept change with it),
defines and materializes card features, trains and tracks a champion through
a pipeline, serves it in process and replays traffic day by day through the
server, logging predictions and the delayed labels. A drift monitor emits
``drift.detected``; a loop policy turns it into: collect fresh labels ->
retrain -> gate against the champion -> shadow -> canary with guardrails ->
promote. The server serves the deployment ``fraud-endpoint``; the shadow and
the canary are changes of that deployment, and `RolloutController` takes
every canary decision from the server's traffic log. On day 50 a scheduled retrain learns from corrupted labels, passes
the gate on equally corrupted evaluation data, and is rolled back by the
canary's guardrail on the true labels. Every step is an event naming its
cause; the run ends with one self-contained HTML report.

Modules: `config` (the scenario), `data` (generation), `features`,
`training` (the pipeline), `server` (the in-process server), `world` (the
replay, labels, nightly jobs, monitoring), `rollout` (gate, shadow,
canary), `loop` (policies), `report`, `runner`, `cli`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["demo", "run_demo"]


def __getattr__(name: str) -> Any:
    if name == "run_demo":
        from loopstack.demo.runner import run_demo

        return run_demo
    if name == "demo":
        from loopstack.demo.cli import demo

        return demo
    raise AttributeError(f"module 'loopstack.demo' has no attribute {name!r}")
