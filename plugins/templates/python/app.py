"""The {{name}} plugin for lifeboat, written in Python.

componentize-py turns this module into a WebAssembly component implementing
the world `plugin` of `wit/plugin.wit` (lifeboat:plugin@{{wit_version}}).
The module it generates from the WIT is `wit_world`: `exports.Steps` is what
we implement, `imports.log` and `imports.transfer` are what the host offers,
and `imports.types` holds the records (PluginInfo, Action, StepError, ...).

Inputs, outputs and action payloads cross the boundary as JSON strings:
`json.loads` what comes in, `json.dumps` every output value.
"""

import json
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.types import (
    Action,
    ActionKind,
    CallContext,
    Field,
    FieldType,
    Output,
    PlanResult,
    PluginInfo,
    StepError,
    StepInfo,
)

NAME = "{{name}}"
VERSION = "0.1.0"


def field(name, type_, doc, required=False, sensitive=False):
    return Field(name=name, type=type_, required=required, sensitive=sensitive, doc=doc)


def step_error(code, message, retryable=False):
    """Raise this (`raise step_error(...)`) to fail a call with a step error."""
    return Err(StepError(code=code, message=message, retryable=retryable))


# ---- step `check` -----------------------------------------------------------

CHECK = StepInfo(
    name="check",
    doc="Check a target (the template's example step)",
    inputs=[
        field("target", FieldType.STRING, "What to check", required=True),
        field("expect", FieldType.STRING, "What the check should find (optional)"),
    ],
    outputs=[
        field("target", FieldType.STRING, "The target checked"),
        field("ok", FieldType.BOOLEAN, "Whether the check passed"),
    ],
)


def check_inputs(inputs):
    target = inputs.get("target", "")
    if not isinstance(target, str) or target == "":
        raise step_error("invalid-input", "`target` must not be empty")
    expect = inputs.get("expect")
    return target, expect


def check_plan(ctx, inputs):
    target, expect = check_inputs(inputs)
    # Plan is read-only and must be deterministic: same inputs, same actions.
    action = Action(
        kind=ActionKind.RUN,
        resource=f"check/{target}",
        summary=f"check {target}" + (f" (expect {expect})" if expect is not None else ""),
        # The plugin's own JSON document (e.g. ids worked out while planning),
        # handed back unchanged to apply as `action.payload`; "" for none.
        payload="",
    )
    return PlanResult(
        actions=[action],
        outputs=[
            Output(name="target", value=json.dumps(target)),  # known now
            Output(name="ok", value=None),  # known only after apply
        ],
    )


def check_apply(ctx, inputs, action):
    target, expect = check_inputs(inputs)
    # Apply must be idempotent: the host applies an interrupted action again.
    # A real plugin would do the check here (e.g. over wasi:http, granted by
    # the workflow) and compare the answer with `expect`.
    ok = True
    log.log(log.Level.INFO, "checked", [("target", target)])
    return [
        Output(name="target", value=json.dumps(target)),
        Output(name="ok", value=json.dumps(ok)),
    ]


# ---- the exports ------------------------------------------------------------

STEPS = {"check": (CHECK, check_plan, check_apply)}


def parse_inputs(inputs):
    try:
        value = json.loads(inputs)
    except ValueError as e:
        raise step_error("invalid-input", f"inputs are not JSON: {e}")
    if not isinstance(value, dict):
        raise step_error("invalid-input", "inputs must be a JSON object")
    return value


def find_step(step):
    if step not in STEPS:
        raise step_error("unknown-step", f"this plugin has no step `{step}`")
    return STEPS[step]


def guarded(fn, *args):
    """Run a step function; report an unexpected exception (a bug) as a
    non-retryable `internal` step error instead of a crash, so its message
    and location reach the run's output."""
    try:
        return fn(*args)
    except Err:
        raise
    except Exception as e:
        frames = traceback.extract_tb(e.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        raise step_error("internal", f"{type(e).__name__}: {e}{where}")


class Steps(exports.Steps):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name=NAME,
            version=VERSION,
            doc="{{name}}: a lifeboat plugin written in Python",
            steps=[info for info, _, _ in STEPS.values()],
        )

    def plan(self, ctx: CallContext, step: str, inputs: str) -> PlanResult:
        _, plan, _ = find_step(step)
        return guarded(plan, ctx, parse_inputs(inputs))

    def apply(self, ctx: CallContext, step: str, inputs: str, action: Action) -> list:
        _, _, apply = find_step(step)
        return guarded(apply, ctx, parse_inputs(inputs), action)
