// The official openai npm SDK against the gateway under `cargo lambda watch`.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { client, newToken, sim, assertClean, fingerprint } from './helpers.mjs';

beforeEach(async () => { await sim.reset(); });

test('non-streamed answer', async () => {
  const token = newToken();
  const r = await client(token).chat.completions.create({ model: 'hailuo', messages: [{ role: 'user', content: '你好' }] });
  const [conv] = (await sim.state()).conversations;
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.content, conv.turns[0].answer);
  assert.equal(r.id, `chatcmpl-${conv.chat_id}`);
  assert.equal(conv.token_fp, fingerprint(token));
  assert.ok(r.usage.completion_tokens > 0);
  await assertClean();
});

test('streamed answer with usage', async () => {
  const stream = await client(newToken()).chat.completions.create({
    model: 'MiniMax-Text-01',
    messages: [{ role: 'system', content: 'brief' }, { role: 'user', content: 'stream it' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  const [conv] = (await sim.state()).conversations;
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(text, conv.turns[0].answer);
  assert.ok(!text.includes('\uFFFD'));
  assert.equal(conv.turns[0].prompt, 'system:brief\nuser:stream it\nassistant:');
  assert.equal(chunks.at(-2).choices[0].finish_reason, 'stop');
  assert.deepEqual(chunks.at(-1).choices, []);
  assert.ok(chunks.at(-1).usage.total_tokens > 0);
  await assertClean();
});

test('multi-turn continuation with conversation_id', async () => {
  const c = client(newToken());
  const first = await c.chat.completions.create({
    model: 'hailuo', messages: [{ role: 'user', content: 'one' }], keep_conversation: true,
  });
  const chatId = first.conversation_id;
  assert.ok(chatId);
  const second = await c.chat.completions.create({
    model: 'hailuo', messages: [{ role: 'user', content: 'two' }], conversation_id: chatId,
  });
  assert.match(second.choices[0].message.content, /第2轮/);
  assert.equal(second.id, `chatcmpl-${chatId}`);
  await assertClean([chatId]);
});

test('bad key is AuthenticationError', async () => {
  await assert.rejects(
    client(' ,, ').chat.completions.create({ model: 'hailuo', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
  );
});

test('malformed request is BadRequestError naming the field', async () => {
  await assert.rejects(
    client(newToken()).chat.completions.create({ model: 'hailuo', messages: [{ role: 'user' , content: 1 }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'messages[0].content',
  );
  assert.deepEqual((await sim.state()).calls, []);
});

test('half an emoji in the history is sent as U+FFFD, not refused', async () => {
  // A chat UI's history cut inside an emoji: a JavaScript string holding one
  // half of a surrogate pair, which JSON.stringify sends as "\ud83d".
  const cut = '😀'.slice(0, 1);
  const r = await client(newToken()).chat.completions.create({
    model: 'hailuo', messages: [{ role: 'user', content: `cut ${cut} and whole 😀` }],
  });
  assert.equal(r.object, 'chat.completion');
  const [conv] = (await sim.state()).conversations;
  assert.ok(conv.turns[0].prompt.includes('cut \uFFFD and whole 😀'), conv.turns[0].prompt);
  await assertClean();
});

test('upstream failing every try is a 502', async () => {
  await sim.fault('http500', { count: 3 });
  await assert.rejects(
    client(newToken()).chat.completions.create({ model: 'hailuo', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.InternalServerError && e.status === 502,
  );
  await assertClean();
});

test('failure mid-stream raises APIError and still deletes', async () => {
  await sim.fault('error_event', { after_events: 3 });
  const stream = await client(newToken()).chat.completions.create({
    model: 'hailuo', messages: [{ role: 'user', content: 'story [sim:len=300]' }], stream: true,
  });
  let text = '';
  await assert.rejects(async () => {
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  }, (e) => e instanceof OpenAI.APIError && /服务繁忙/.test(e.message));
  assert.ok(text.length > 0);
  await assertClean();
});

test('models list', async () => {
  const ids = [];
  for await (const m of client('anything').models.list()) ids.push(m.id);
  assert.ok(ids.includes('hailuo') && ids.includes('MiniMax-VL-01'));
});
