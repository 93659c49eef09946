// The MiniMax Code upstream with the npm clients: the openai SDK's streamed
// native tool calls, and the Vercel AI SDK's multi-step generateText, against
// the simulator of MiniMax Code's gateway (its device login, its Messages
// route with scripted tool_use blocks).
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import OpenAI from 'openai';
import { generateText, tool, isStepCount } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { z } from 'zod';

const CODE_SIM_URL = process.env.CODE_SIM_URL ?? 'http://127.0.0.1:18082';
const CODE_URL = 'http://127.0.0.1:9006'; // UPSTREAM=minimax-code, header mode

async function control(path, body) {
  const res = await fetch(`${CODE_SIM_URL}${path}`, body === undefined ? {} : {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, `simulator ${path}`);
  return res.json();
}

const b64url = (buf) => buf.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

/** A device login as a client makes it; the simulator's clock moved past the interval. */
async function login(account) {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  const form = (fields) => ({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields) });
  const start = await (await fetch(`${CODE_SIM_URL}/oauth2/device/code`, form({
    client_id: 'mcode-public', scope: 'agent.default', audience: 'agent-backend',
    code_challenge: challenge, code_challenge_method: 'S256',
  }))).json();
  await control('/_sim/device/approve', { user_code: start.user_code, account });
  await control('/_sim/clock', { advance_s: start.interval });
  const grant = await (await fetch(`${CODE_SIM_URL}/oauth2/token`, form({
    grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: start.device_code,
    client_id: 'mcode-public', code_verifier: verifier,
  }))).json();
  assert.ok(grant.access_token?.startsWith('mmoat_'), 'an access token');
  return grant.access_token;
}

const script = (blocks, extra = {}) => control('/_sim/script', { blocks, ...extra });
const sent = async () => (await control('/_sim/log')).requests.filter((r) => r.path.endsWith('/messages'));

beforeEach(async () => { await control('/_sim/reset', {}); });
afterEach(async () => {
  const { violations } = await control('/_sim/violations');
  assert.deepEqual(violations, [], 'no MiniMax Code protocol violation');
});

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

test('openai SDK: native tool calls stream as argument deltas, then the answer', async () => {
  await script([{ type: 'tool_use', id: 'toolu_n1', name: 'get_weather', input: { city: 'Paris' } }]);
  await script([{ type: 'text', text: 'Sunny in Paris.' }]);
  const c = new OpenAI({ baseURL: `${CODE_URL}/v1`, apiKey: await login('node'), maxRetries: 0, timeout: 60_000 });
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const runner = c.chat.completions.stream({ model: 'gpt-4o', messages, tools: [weather], stream_options: { include_usage: true } });
  const first = await runner.finalChatCompletion();
  const choice = first.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  const [call] = choice.message.tool_calls;
  assert.equal(call.id, 'toolu_n1');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
  messages.push(choice.message, { role: 'tool', tool_call_id: call.id, content: 'sunny' });
  const second = await c.chat.completions.create({ model: 'gpt-4o', messages, tools: [weather] });
  assert.equal(second.choices[0].message.content, 'Sunny in Paris.');
  const last = (await sent()).at(-1).detail.body;
  assert.deepEqual(last.messages[2].content, [{ type: 'tool_result', tool_use_id: 'toolu_n1', content: 'sunny' }]);
});

test('Vercel AI SDK: generateText runs a native tool over several steps', async () => {
  await script([{ type: 'text', text: 'Checking.' }, { type: 'tool_use', id: 'toolu_v1', name: 'get_weather', input: { city: 'Lyon' } }]);
  await script([{ type: 'text', text: 'It is 18°C and sunny in Lyon.' }]);
  const provider = createOpenAICompatible({ name: 'minimax', baseURL: `${CODE_URL}/v1`, apiKey: await login('ai'), includeUsage: true });
  const seen = [];
  const result = await generateText({
    model: provider('MiniMax-M3'),
    prompt: 'What is the weather in Lyon?',
    tools: {
      get_weather: tool({
        description: 'The current weather in a city',
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => { seen.push(city); return { city, celsius: 18, sky: 'sunny' }; },
      }),
    },
    stopWhen: isStepCount(3),
  });
  assert.deepEqual(seen, ['Lyon']);
  assert.equal(result.text, 'It is 18°C and sunny in Lyon.');
  assert.equal(result.steps.length, 2);
  assert.equal(result.steps[0].finishReason, 'tool-calls');
  assert.ok(result.totalUsage.inputTokens > 0, 'the upstream counted the input');
  const last = (await sent()).at(-1).detail.body;
  const results = last.messages.flatMap((m) => (Array.isArray(m.content) ? m.content : [])).filter((b) => b.type === 'tool_result');
  assert.equal(results.length, 1);
  assert.equal(results[0].tool_use_id, 'toolu_v1');
});
