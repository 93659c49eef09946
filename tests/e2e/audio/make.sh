#!/usr/bin/env bash
# Audio fixtures for the transcription tests, made from Debian's espeak-ng and
# ffmpeg (nothing committed, nothing downloaded): one spoken sentence in every
# accepted format, a silent clip, a truncated file, a text file named .mp3, and
# one file over the request limit. Idempotent: made once per directory.
set -euo pipefail
out=${1:?usage: make.sh DIR}
mkdir -p "$out"
cd "$out"
[ -f done ] && exit 0
ff() { ffmpeg -nostdin -v error -y "$@"; }
espeak-ng -s 150 -w speech.wav "The quick brown fox jumps over the lazy dog. Speech recognition test, one two three."
ff -i speech.wav -c:a libmp3lame -b:a 64k speech.mp3
cp speech.mp3 speech.mpeg
cp speech.mp3 speech.mpga
ff -i speech.wav -c:a aac -b:a 64k speech.m4a
ff -i speech.wav -c:a libvorbis speech.ogg
ff -i speech.wav -c:a libopus -b:a 32k -f ogg speech.opus.ogg
ff -i speech.wav -c:a flac speech.flac
ff -i speech.wav -c:a libopus -b:a 32k -f webm speech.webm
# Stereo at 48 kHz, as phones record.
ff -i speech.wav -ac 2 -ar 48000 -c:a libvorbis speech.stereo48k.ogg
ff -f lavfi -i anullsrc=r=16000:cl=mono -t 3 silence.wav
# An m4a keeps its index (moov) at the end: its first 4 kB cannot be read.
head -c 4096 speech.m4a > truncated.m4a
printf 'These are meeting notes, saved with the wrong extension.\n' > notes.mp3
# Over 1 MiB (the e2e deployments' MAX_REQUEST_BYTES): 40 s of 16-bit 16 kHz.
ff -f lavfi -i "sine=frequency=440:sample_rate=16000" -t 40 long.wav
for f in speech.*; do
  printf '%s %s\n' "$f" "$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$f")"
done >durations.txt
touch done
