"""buddy guarding an OpenAI Agents SDK agent, offline.

The SDK's scripted model (``agents.testing.ScriptedModel``) stands in for the LLM, so
this runs without an API key: ``pip install 'buddy[openai-agents]'`` and
``python examples/openai_agents_example.py``. With a real model, drop ``model=``.

The model asks to send an email. buddy's catalogue says ``send_email`` is HIGH risk
and needs a person, so the run stops with an interruption and buddy opens a ticket;
a person approves it with an edited body, the run resumes, and the tool runs once,
with the edited arguments. The audit trail replays.
"""

import asyncio

from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call

from buddy.engine import Engine, RiskLevel, ToolContract, replay
from buddy.engine.adapters.openai_agents import approve, guard_function_tool

set_tracing_disabled(True)  # offline: no trace export


@function_tool
def send_email(to: str, body: str) -> str:
    """Send an email."""
    print("send_email ran with:", {"to": to, "body": body})
    return f"sent to {to}"


async def main() -> None:
    engine = Engine.default(clock=lambda: 0.0, default_confidence=0.9)
    engine.registry.register(ToolContract(name="send_email", risk=RiskLevel.HIGH,
                                          reversible=False, requires_approval=True))
    model = ScriptedModel([
        [function_call("send_email", {"to": "ann@example.com", "body": "hi"},
                       call_id="call-1")],
        [assistant_message("done")],
    ])
    agent = Agent(name="mailer", model=model,
                  tools=[guard_function_tool(send_email, engine, agent="mailer")])

    result = await Runner.run(agent, "Tell Ann her refund is coming.",
                              run_config=RunConfig(tracing_disabled=True))
    print("interrupted for:", ", ".join(i.tool_name for i in result.interruptions))
    state = result.to_state()
    for item in result.interruptions:
        approve(state, item, by="alice",
                args={"to": "ann@example.com", "body": "Your refund is on its way."})
    result = await Runner.run(agent, state, run_config=RunConfig(tracing_disabled=True))
    print("final:", result.final_output)
    print("audit replays:", replay(engine.audit).ok)


if __name__ == "__main__":
    asyncio.run(main())
