// Speech and transcription with the openai npm SDK: the voice the simulator
// spoke in, the streamed bytes against the parts it served, and transcripts of
// fixtures made by tests/e2e/audio/make.sh (AUDIO_DIR).
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { toFile } from 'openai';
import { client, newToken, sim, assertClean } from './helpers.mjs';

const AUDIO_DIR = process.env.AUDIO_DIR ?? '../../../.e2e/audio';
const TEXT = 'Speech from the npm SDK. 你好，海螺。';

beforeEach(async () => { await sim.reset(); });

async function partsOf(synthesis) {
  const parts = [];
  for (const url of synthesis.parts) {
    const res = await fetch(url, { headers: { referer: 'https://hailuoai.com/' } });
    parts.push(Buffer.from(await res.arrayBuffer()));
  }
  return Buffer.concat(parts);
}

for (const [model, voice, upstream] of [['tts-1', 'fable', 'boyan_new_hailuo'], ['tts-1-hd', 'nova', 'keli_hailuo']]) {
  test(`audio.speech.create speaks ${voice} under ${model} as ${upstream}`, async () => {
    const response = await client(newToken()).audio.speech.create({ model, voice, input: TEXT });
    assert.equal(response.headers.get('content-type'), 'audio/mpeg');
    const body = Buffer.from(await response.arrayBuffer());
    const synthesis = (await sim.state()).syntheses.at(-1);
    assert.equal(synthesis.voice, upstream);
    assert.ok(body.equals(await partsOf(synthesis)), 'the streamed bytes are the parts, in order');
    await assertClean();
  });
}

test('audio.speech.create as pcm is 24 kHz 16-bit mono of the speech length', async () => {
  const response = await client(newToken()).audio.speech.create({
    model: 'tts-1', voice: 'alloy', input: TEXT, response_format: 'pcm',
  });
  const pcm = Buffer.from(await response.arrayBuffer());
  const synthesis = (await sim.state()).syntheses.at(-1);
  const seconds = pcm.length / 48000;
  assert.ok(seconds >= synthesis.seconds - 0.02 && seconds <= synthesis.seconds + 0.09 * synthesis.parts.length,
    `${seconds} s of pcm for ${synthesis.seconds} s of speech`);
  await assertClean();
});

for (const [name, format] of [['speech.webm', 'json'], ['speech.m4a', 'text'], ['speech.opus.ogg', 'json']]) {
  test(`audio.transcriptions.create of ${name} as ${format}`, async () => {
    await sim.replies(`npm heard ${name}`);
    const file = await toFile(await readFile(join(AUDIO_DIR, name)), name);
    const result = await client(newToken()).audio.transcriptions.create({ model: 'whisper-1', file, response_format: format });
    const text = format === 'text' ? result.trim() : result.text;
    assert.equal(text, `npm heard ${name}`);
    const heard = (await sim.state()).transcriptions.at(-1);
    assert.equal(heard.sample_rate, 44100);
    await assertClean();
  });
}

test('a text file named .mp3 is a 400 naming the field', async () => {
  const file = await toFile(await readFile(join(AUDIO_DIR, 'notes.mp3')), 'notes.mp3');
  await assert.rejects(
    client(newToken()).audio.transcriptions.create({ model: 'whisper-1', file }),
    (e) => e.status === 400 && e.param === 'file' && /text/.test(e.message),
  );
  await assertClean();
});
