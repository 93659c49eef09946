// Shared helpers for the npm SDK tests: the simulator's control API and clients.
import { createHash, randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

export const GATEWAY_URL = process.env.GATEWAY_URL ?? 'http://127.0.0.1:9000';
export const SIM_URL = process.env.SIM_URL ?? 'http://127.0.0.1:18080';

export const fingerprint = (token) => createHash('sha256').update(token).digest('hex').slice(0, 8);
export const newToken = (label = 'n') => `tok-e2e-${label}-${randomBytes(6).toString('hex')}`;
export const client = (apiKey) => new OpenAI({ baseURL: `${GATEWAY_URL}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });

async function control(path, body) {
  const res = await fetch(`${SIM_URL}/__sim/${path}`, body === undefined ? {} : {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, `simulator ${path}`);
  return res.json();
}

export const sim = {
  reset: () => control('reset', {}),
  state: () => control('state'),
  settings: (s) => control('settings', s),
  fault: (kind, opts = {}) => control('faults', { kind, ...opts }),
  replies: (...replies) => control('replies', { replies }),
};

/** A tool call as the contract has the model write it (`{nonce}` filled in by the simulator). */
export const toolCall = (name, args, nonce = '{nonce}') =>
  `<tool_call id="${nonce}">${JSON.stringify({ name, arguments: args })}</tool_call>`;

/** After a test: no protocol violation, nothing left undeleted except `kept`. */
export async function assertClean(kept = []) {
  const deadline = Date.now() + 10_000;
  let state;
  do {
    state = await sim.state();
    const leftover = state.conversations.filter((c) => !c.deleted && !kept.includes(c.chat_id));
    if (leftover.length === 0 && state.busy.length === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  } while (Date.now() < deadline);
  assert.deepEqual(state.violations, []);
  assert.deepEqual(state.conversations.filter((c) => !c.deleted && !kept.includes(c.chat_id)), []);
  for (const id of kept) assert.ok(state.conversations.find((c) => c.chat_id === id && !c.deleted), `kept ${id}`);
}
