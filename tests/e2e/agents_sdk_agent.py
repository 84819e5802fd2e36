"""An OpenAI Agents SDK agent with one function tool, run against Peregrine through the
Responses API; run by test_agents_sdk.py in the Agents SDK's own virtual environment.

    python agents_sdk_agent.py <base_url> <api_key> <model>

Prints one JSON line: the tool's calls and the agent's final output."""

import asyncio
import json
import sys

from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool
from agents import set_tracing_disabled
from openai import AsyncOpenAI

# The tracing exporter needs the network.
set_tracing_disabled(True)
CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    CALLS.append(city)
    return json.dumps({"city": city, "sky": "sunny", "temp_c": 21})


async def main(base_url: str, api_key: str, model: str) -> None:
    client = AsyncOpenAI(base_url=f"{base_url}/openai/v1", api_key=api_key, max_retries=0)
    agent = Agent(
        name="Weather",
        instructions="You answer questions about the weather. Use the get_weather tool.",
        model=OpenAIResponsesModel(model=model, openai_client=client),
        model_settings=ModelSettings(temperature=0),
        tools=[get_weather],
    )
    result = await Runner.run(agent, "What is the weather in Paris?", max_turns=4)
    print(json.dumps({"calls": CALLS, "final_output": result.final_output}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
