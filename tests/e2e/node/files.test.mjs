// Documents and images with the openai npm SDK: data URLs uploaded to the
// simulator's OSS; its answer names each file it was given with its SHA-256.
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { client, newToken, sim, assertClean } from './helpers.mjs';

beforeEach(async () => { await sim.reset(); });

const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
const TEXT = Buffer.from('meeting notes\n会议纪要\n');
const sha = (b) => createHash('sha256').update(b).digest('hex');

test('an image and a text file by data URL reach the upstream byte for byte', async () => {
  const stream = await client(newToken()).chat.completions.create({
    model: 'hailuo',
    stream: true,
    messages: [{ role: 'user', content: [
      { type: 'text', text: 'Describe both.' },
      { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG.toString('base64')}` } },
      { type: 'file', file: { filename: 'notes.txt', file_data: `data:text/plain;base64,${TEXT.toString('base64')}` } },
    ] }],
  });
  let content = '';
  for await (const chunk of stream) content += chunk.choices[0]?.delta?.content ?? '';
  assert.ok(content.includes(`[file file.png image/png ${PNG.length} bytes sha256=${sha(PNG)}]`), content);
  assert.ok(content.includes(`[file notes.txt text/plain ${TEXT.length} bytes sha256=${sha(TEXT)}]`), content);
  await assertClean();
});

test('a file_id is a BadRequestError that says to send the file', async () => {
  await assert.rejects(
    client(newToken()).chat.completions.create({
      model: 'hailuo',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'x' }, { type: 'file', file: { file_id: 'file-123' } }] }],
    }),
    (e) => e.status === 400 && /Files API/.test(e.message) && e.param === 'messages[0].content[1].file.file_id',
  );
});
