// The official openai npm SDK against the MiniMax Agent upstream (UPSTREAM=minimax-agent).
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { randomBytes } from 'node:crypto';

const AGENT_URL = process.env.AGENT_URL ?? 'http://127.0.0.1:9004';
const SIM = process.env.AGENT_SIM_URL ?? 'http://127.0.0.1:18081';
const b64url = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
const jwt = (id) => `${b64url({ alg: 'HS256' })}.${b64url({ user: { id }, jti: randomBytes(6).toString('hex') })}.tok-e2e-${randomBytes(4).toString('hex')}`;
const client = (token) => new OpenAI({ baseURL: `${AGENT_URL}/v1`, apiKey: token, maxRetries: 0, timeout: 60_000 });
const state = async () => (await fetch(`${SIM}/__sim/state`)).json();

beforeEach(async () => { await fetch(`${SIM}/__sim/reset`, { method: 'POST' }); });

test('agent stream carries reasoning_content then content', async () => {
  const stream = await client(jwt('300000000000002001')).chat.completions.create({
    model: 'MiniMax-M2.5', messages: [{ role: 'user', content: 'hello agent' }], stream: true,
  });
  let reasoning = '';
  let content = '';
  for await (const chunk of stream) {
    reasoning += chunk.choices[0]?.delta?.reasoning_content ?? '';
    content += chunk.choices[0]?.delta?.content ?? '';
  }
  const s = await state();
  assert.equal(reasoning, s.conversations[0].turns[0].thinking);
  assert.equal(content, s.conversations[0].turns[0].answer);
  assert.ok(s.conversations[0].deleted);
  assert.deepEqual(s.violations, []);
});

test('agent non-stream answer has message.reasoning_content', async () => {
  const r = await client(jwt('300000000000002002')).chat.completions.create({
    model: 'MiniMax-M2.5', messages: [{ role: 'user', content: 'hi' }],
  });
  assert.ok(r.choices[0].message.reasoning_content.length > 0);
  assert.match(r.choices[0].message.content, /第1轮/);
});

test('agent token without user id is AuthenticationError', async () => {
  await assert.rejects(
    client('not.a-jwt.at-all').chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.AuthenticationError,
  );
});
