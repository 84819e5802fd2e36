// Real Node clients against Peregrine, unchanged but for base URL and key: the official
// `openai` package, `groq-sdk`, and the Vercel AI SDK (`ai` with `@ai-sdk/groq` and
// `@ai-sdk/openai`). Run by tests/e2e/test_clients_node.py, which makes the assertions:
//
//     node clients.mjs <client> <server-url> <api-key> [case ...]
//
// <client> is openai-node, groq-sdk or ai-sdk; <server-url> the bare server URL. Runs the
// client's cases (all, or those named) one after another and prints one JSON line: for
// each case what the client returned ({"ok": {...}}) or the error it threw ({"error": ...}),
// so that one failing case does not hide the others.

import { createGroq } from '@ai-sdk/groq';
import { createOpenAI } from '@ai-sdk/openai';
import { generateObject, generateText, stepCountIs, streamText, tool } from 'ai';
import Groq, { toFile as groqToFile } from 'groq-sdk';
import OpenAI, { toFile as openaiToFile } from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';

// Groq's id; the server answers it with its default model.
const MODEL = 'llama-3.3-70b-versatile';
// Generation on a shared CPU can be slow: never let a client's default timeout cut it short.
const TIMEOUT_MS = 600_000;
const BATCH_POLL_TIMEOUT_MS = 300_000;
const BATCH_TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

const ONE_WORD = 'You are a helpful assistant. Answer with a single word.';
const CAPITAL_QUESTION = 'What is the capital of France? Answer with one word only.';
const CAPITAL = [{ role: 'system', content: ONE_WORD }, { role: 'user', content: CAPITAL_QUESTION }];
const COUNT_REQUEST = 'Count from 1 to 5, separated by spaces.';
const COUNT = [{ role: 'user', content: COUNT_REQUEST }];
const CITY_PROMPT = 'Describe Paris, the capital of France, as JSON.';
const WEATHER_PROMPT = 'What is the weather in Paris?';

// Small and flat, so the object always closes well within the token budget.
const City = z.object({
  city: z.string(),
  country: z.string(),
  population_millions: z.number(),
  is_capital: z.boolean(),
});

const WEATHER_PARAMETERS = {
  type: 'object',
  properties: { city: { type: 'string', description: 'The city name' } },
  required: ['city'],
  additionalProperties: false,
};
const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather for a city.',
    parameters: WEATHER_PARAMETERS,
  },
};

function weatherIn(city) {
  return { city, sky: 'sunny', temp_c: 21 };
}

// --- Chat Completions, shared by openai-node and groq-sdk (the same call shapes) ---------

async function chat(client) {
  const r = await client.chat.completions.create({
    model: MODEL, messages: CAPITAL, max_tokens: 16, temperature: 0,
  });
  return {
    id: r.id, object: r.object, model: r.model, usage: r.usage,
    text: r.choices[0].message.content, finish_reason: r.choices[0].finish_reason,
  };
}

async function stream(client) {
  const chunks = await client.chat.completions.create({
    model: MODEL, messages: COUNT, max_tokens: 16, temperature: 0,
    stream: true, stream_options: { include_usage: true },
  });
  const deltas = [];
  let finishReason = null;
  let usage = null;
  for await (const chunk of chunks) {
    const choice = chunk.choices[0];
    if (choice?.delta?.content) deltas.push(choice.delta.content);
    if (choice?.finish_reason) finishReason = choice.finish_reason;
    if (chunk.usage) usage = chunk.usage;
  }
  return { deltas: deltas.length, text: deltas.join(''), finish_reason: finishReason, usage };
}

// Forced by name, so which tool is called does not depend on the model.
async function tools(client) {
  const r = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: WEATHER_PROMPT }],
    tools: [WEATHER_TOOL],
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    max_tokens: 64,
    temperature: 0,
  });
  const choice = r.choices[0];
  return {
    finish_reason: choice.finish_reason,
    calls: (choice.message.tool_calls ?? []).map((c) => ({
      id: c.id, type: c.type, name: c.function.name, arguments: JSON.parse(c.function.arguments),
    })),
  };
}

function batchLine(i) {
  return {
    custom_id: `request-${i}`,
    method: 'POST',
    url: '/v1/chat/completions',
    body: {
      model: MODEL,
      messages: [{ role: 'user', content: `What is ${i}+${i}? Answer with the number only.` }],
      max_tokens: 16,
      temperature: 0,
    },
  };
}

async function waitForBatch(client, id) {
  const deadline = Date.now() + BATCH_POLL_TIMEOUT_MS;
  for (;;) {
    const batch = await client.batches.retrieve(id);
    if (BATCH_TERMINAL.has(batch.status)) return batch;
    if (Date.now() > deadline) throw new Error(`batch still ${batch.status}: ${JSON.stringify(batch)}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

// The batch docs' flow: upload a JSONL file, create the batch, poll it, download the output.
async function batch(client, toFile) {
  const jsonl = [1, 2].map((i) => JSON.stringify(batchLine(i)) + '\n').join('');
  const file = await client.files.create({
    file: await toFile(Buffer.from(jsonl), 'batch_file.jsonl'), purpose: 'batch',
  });
  const created = await client.batches.create({
    input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h',
  });
  const done = await waitForBatch(client, created.id);
  const output = done.output_file_id ? await (await client.files.content(done.output_file_id)).text() : '';
  return {
    file: { id: file.id, purpose: file.purpose, bytes: file.bytes },
    status: done.status,
    request_counts: done.request_counts,
    lines: output.split('\n').filter((l) => l.trim()).map((l) => {
      const line = JSON.parse(l);
      return {
        custom_id: line.custom_id,
        status_code: line.response?.status_code,
        content: line.response?.body?.choices?.[0]?.message?.content,
      };
    }),
  };
}

// --- openai-node ---------------------------------------------------------------------------

function openaiCases(server, apiKey) {
  const client = new OpenAI({ baseURL: `${server}/openai/v1`, apiKey, maxRetries: 0, timeout: TIMEOUT_MS });
  return {
    chat: () => chat(client),
    stream: () => stream(client),
    // The SDK's own structured-output helper: a strict json_schema from a zod schema, parsed back.
    structured: async () => {
      const r = await client.chat.completions.parse({
        model: MODEL,
        messages: [{ role: 'user', content: CITY_PROMPT }],
        response_format: zodResponseFormat(City, 'city'),
        max_tokens: 64,
        temperature: 0,
      });
      return { parsed: r.choices[0].message.parsed, finish_reason: r.choices[0].finish_reason };
    },
    tools: () => tools(client),
    batch: () => batch(client, openaiToFile),
    responses: async () => {
      const r = await client.responses.create({
        model: MODEL,
        instructions: 'Answer in one short sentence.',
        input: 'What is the capital of France?',
        max_output_tokens: 40,
        temperature: 0,
      });
      return { id: r.id, object: r.object, status: r.status, text: r.output_text, usage: r.usage };
    },
    // The SDK's stream helper, which rebuilds the response from the events and checks their order.
    responses_stream: async () => {
      const events = client.responses.stream({
        model: MODEL, input: 'Count from 1 to 5.', max_output_tokens: 40, temperature: 0,
      });
      const types = [];
      const deltas = [];
      for await (const event of events) {
        if (!types.includes(event.type)) types.push(event.type);
        if (event.type === 'response.output_text.delta') deltas.push(event.delta);
      }
      const final = await events.finalResponse();
      return {
        types, deltas: deltas.length, text: deltas.join(''),
        final: { status: final.status, text: final.output_text, usage: final.usage },
      };
    },
  };
}

// --- groq-sdk --------------------------------------------------------------------------------

function groqCases(server, apiKey) {
  // groq-sdk appends /openai/v1 itself: its base URL is the bare server URL.
  const client = new Groq({ baseURL: server, apiKey, maxRetries: 0, timeout: TIMEOUT_MS });
  return {
    chat: () => chat(client),
    stream: () => stream(client),
    structured: async () => {
      const r = await client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: CITY_PROMPT }],
        response_format: {
          type: 'json_schema',
          json_schema: { name: 'city', strict: true, schema: z.toJSONSchema(City) },
        },
        max_tokens: 64,
        temperature: 0,
      });
      return { parsed: JSON.parse(r.choices[0].message.content), finish_reason: r.choices[0].finish_reason };
    },
    tools: () => tools(client),
    batch: () => batch(client, groqToFile),
  };
}

// --- the Vercel AI SDK -----------------------------------------------------------------------

const weatherTool = tool({
  description: 'Get the current weather for a city.',
  inputSchema: z.object({ city: z.string().describe('The city name') }),
  execute: async ({ city }) => weatherIn(city),
});

// streamText's text deltas. It reports a failed request to onError and ends the stream
// quietly, so the error is kept and rethrown.
async function streamed(options) {
  let failure = null;
  const result = streamText({ ...options, onError: ({ error }) => { failure = error; } });
  const deltas = [];
  for await (const delta of result.textStream) deltas.push(delta);
  if (failure) throw failure;
  return { result, deltas };
}

function aiSdkCases(server, apiKey) {
  const groq = createGroq({ baseURL: `${server}/openai/v1`, apiKey });
  const openai = createOpenAI({ baseURL: `${server}/openai/v1`, apiKey });
  const common = { model: groq(MODEL), temperature: 0, maxRetries: 0 };
  return {
    chat: async () => {
      const r = await generateText({ ...common, system: ONE_WORD, prompt: CAPITAL_QUESTION, maxOutputTokens: 16 });
      return { text: r.text, finish_reason: r.finishReason, usage: r.usage };
    },
    stream: async () => {
      const { result, deltas } = await streamed({ ...common, prompt: COUNT_REQUEST, maxOutputTokens: 16 });
      return {
        deltas: deltas.length, text: deltas.join(''),
        finish_reason: await result.finishReason, usage: await result.usage,
      };
    },
    structured: async () => {
      const r = await generateObject({ ...common, schema: City, prompt: CITY_PROMPT, maxOutputTokens: 64 });
      return { parsed: r.object, finish_reason: r.finishReason };
    },
    // One step with the tool required: the call, and the result of running it.
    tools: async () => {
      const r = await generateText({
        ...common, prompt: WEATHER_PROMPT, tools: { get_weather: weatherTool },
        toolChoice: 'required', maxOutputTokens: 64,
      });
      return {
        finish_reason: r.finishReason,
        calls: r.toolCalls.map((c) => ({ name: c.toolName, arguments: c.input })),
        results: r.toolResults.map((t) => t.output),
      };
    },
    // An agent loop: the first step must call the tool, later ones may answer (the server
    // turns a repeated call into the answer), and the run stops once the model answers.
    agent: async () => {
      const r = await generateText({
        ...common,
        system: 'You answer questions about the weather. Use the get_weather tool.',
        prompt: WEATHER_PROMPT,
        tools: { get_weather: weatherTool },
        stopWhen: stepCountIs(4),
        prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? 'required' : 'auto' }),
        maxOutputTokens: 64,
      });
      return {
        steps: r.steps.map((s) => ({
          finish_reason: s.finishReason, calls: s.toolCalls.map((c) => ({ name: c.toolName, arguments: c.input })),
        })),
        text: r.text,
        finish_reason: r.finishReason,
      };
    },
    // @ai-sdk/openai speaks the Responses API by default.
    responses: async () => {
      const r = await generateText({
        model: openai(MODEL), temperature: 0, maxRetries: 0, maxOutputTokens: 40,
        system: 'Answer in one short sentence.', prompt: 'What is the capital of France?',
      });
      return { id: r.response.id, text: r.text, finish_reason: r.finishReason, usage: r.usage };
    },
    responses_stream: async () => {
      const { result, deltas } = await streamed({
        model: openai(MODEL), temperature: 0, maxRetries: 0, maxOutputTokens: 40, prompt: 'Count from 1 to 5.',
      });
      return {
        id: (await result.response).id, deltas: deltas.length, text: deltas.join(''),
        finish_reason: await result.finishReason, usage: await result.usage,
      };
    },
  };
}

const CLIENTS = { 'openai-node': openaiCases, 'groq-sdk': groqCases, 'ai-sdk': aiSdkCases };

function describe(error) {
  return {
    name: error?.name, message: String(error?.message ?? error),
    status: error?.status ?? error?.statusCode, body: error?.error ?? error?.responseBody,
  };
}

async function main([clientName, server, apiKey, ...only]) {
  const makeCases = CLIENTS[clientName];
  if (!makeCases || !server || !apiKey) {
    console.error(`usage: node clients.mjs <${Object.keys(CLIENTS).join('|')}> <server-url> <api-key> [case ...]`);
    process.exit(2);
  }
  const cases = makeCases(server.replace(/\/$/, ''), apiKey);
  const results = {};
  for (const [name, run] of Object.entries(cases)) {
    if (only.length && !only.includes(name)) continue;
    const started = Date.now();
    try {
      results[name] = { ok: await run() };
    } catch (error) {
      results[name] = { error: describe(error) };
    }
    results[name].seconds = (Date.now() - started) / 1000;
  }
  console.log(JSON.stringify(results));
}

await main(process.argv.slice(2));
