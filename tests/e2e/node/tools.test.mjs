// Tool calling and structured output with the openai npm SDK and the Vercel AI
// SDK (`ai` + `@ai-sdk/openai-compatible`), against the Hailuo simulator playing
// a model that follows the tool contract, its answers cut into 3-byte events.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { generateText, tool, isStepCount } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { z } from 'zod';
import { GATEWAY_URL, client, newToken, sim, assertClean, toolCall } from './helpers.mjs';

beforeEach(async () => { await sim.reset(); await sim.settings({ chunk_bytes: 3 }); });

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

test('openai SDK: a streamed agent loop (call, result, final text)', async () => {
  await sim.replies(`On it. ${toolCall('get_weather', { city: 'Paris' })}`, 'Sunny in Paris.');
  const c = client(newToken());
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const runner = c.chat.completions.stream({ model: 'hailuo', messages, tools: [weather] });
  const first = await runner.finalChatCompletion();
  const choice = first.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.content, 'On it. ');
  const [call] = choice.message.tool_calls;
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
  messages.push(choice.message, { role: 'tool', tool_call_id: call.id, content: 'sunny' });
  const second = await c.chat.completions.create({ model: 'hailuo', messages, tools: [weather] });
  assert.equal(second.choices[0].message.content, 'Sunny in Paris.');
  assert.equal(second.choices[0].finish_reason, 'stop');
  const s = await sim.state();
  assert.match(s.conversations[1].turns[0].prompt, new RegExp(`<tool_result call_id="${call.id}" name="get_weather">sunny</tool_result>`));
  await assertClean();
});

test('openai SDK: json_schema response_format gives bare, valid JSON', async () => {
  await sim.replies('Here:\n```json\n{"name": "Paris", "population": 2100000}\n```');
  const r = await client(newToken()).chat.completions.create({
    model: 'hailuo',
    messages: [{ role: 'user', content: 'Paris?' }],
    response_format: {
      type: 'json_schema',
      json_schema: { name: 'city', strict: true, schema: { type: 'object', properties: { name: { type: 'string' }, population: { type: 'integer' } }, required: ['name', 'population'], additionalProperties: false } },
    },
  });
  assert.deepEqual(JSON.parse(r.choices[0].message.content), { name: 'Paris', population: 2100000 });
  await assertClean();
});

test('Vercel AI SDK: generateText with a tool over several steps', async () => {
  await sim.replies(`${toolCall('get_weather', { city: 'Lyon' })}`, 'It is 18°C and sunny in Lyon.');
  const provider = createOpenAICompatible({ name: 'hailuo', baseURL: `${GATEWAY_URL}/v1`, apiKey: newToken('ai'), includeUsage: true });
  const seen = [];
  const result = await generateText({
    model: provider('hailuo'),
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
  const s = await sim.state();
  assert.match(s.conversations[1].turns[0].prompt, /name="get_weather">\{"city":"Lyon","celsius":18,"sky":"sunny"\}<\/tool_result>/);
  await assertClean();
});
