"""Speech and transcription on MiniMax's paid platform (T2A v2, `asr-1.0`)
end to end, on both gateway kinds, with the OpenAI SDK against the
simulator: on the paid-only deployment and on a MiniMax Code one (whose
own upstream has no speech), whenever the request has a platform key.
The bytes the caller gets are the simulator's audio, whole or streamed,
never its final aggregate twice; voices map or pass through byte for byte;
`speed` reaches the platform; every accepted container goes as it is and
webm is transcoded; every response format comes back in OpenAI's shape."""

import hashlib
import json
import os
from pathlib import Path

import openai
import pytest

from conftest import API_URL, CODE_URL, ON_SERVER

AUDIO_DIR = Path(os.environ.get("AUDIO_DIR", ".e2e/audio"))


def client(key: str, base: str = API_URL) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def t2a_sent(api_sim) -> dict:
    return json.loads(api_sim.requests("/v1/t2a_v2")[-1]["body"])


FORMATS = [
    # OpenAI format, T2A format, streamed, sample rate asked, content type
    ("mp3", "mp3", True, 32000, "audio/mpeg"),
    ("pcm", "pcm", True, 24000, "audio/pcm"),
    ("wav", "wav", False, 24000, "audio/wav"),
    ("flac", "flac", False, 32000, "audio/flac"),
    ("opus", "opus", False, 24000, "audio/ogg"),
]


@pytest.mark.parametrize("fmt,t2a,streamed,rate,content_type", FORMATS, ids=[f[0] for f in FORMATS])
@pytest.mark.parametrize("base", [API_URL, CODE_URL], ids=["paid-only", "on-minimax-code"])
def test_speech_in_every_format_is_the_platforms_audio(api_sim, platform_key, fmt, t2a, streamed, rate,
                                                        content_type, base):
    with client(platform_key, base).audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="Hello there.", response_format=fmt) as r:
        assert r.headers["content-type"] == content_type
        audio = r.read()
    sent = api_sim.state()["last_audio"]
    assert hashlib.sha256(audio).hexdigest() == sent["sha256"] and len(audio) == sent["size"]
    body = t2a_sent(api_sim)
    assert body["model"] == "speech-2.8-turbo" and body["text"] == "Hello there."
    assert body["voice_setting"] == {"voice_id": "male-qn-qingse", "speed": 1.0, "vol": 1.0, "pitch": 0}
    assert body["audio_setting"]["format"] == t2a and body["audio_setting"]["sample_rate"] == rate
    assert body["stream"] is streamed
    assert body.get("stream_options") == ({"exclude_aggregated_audio": True} if streamed else None)
    call = api_sim.requests("/v1/t2a_v2")[-1]
    assert "groupid" not in call["query"].lower() and "x-api-key" not in call["headers"]


def test_a_stream_with_the_aggregate_repeated_is_not_sent_twice(api_sim, platform_key):
    # The simulator sends the aggregate only when not excluded; the gateway
    # always excludes it and never plays the final event's audio either way.
    api_sim.settings(t2a_events=5, done=True)
    audio = client(platform_key).audio.speech.create(model="tts-1-hd", voice="coral", input="Five parts.").read()
    assert hashlib.sha256(audio).hexdigest() == api_sim.state()["last_audio"]["sha256"]
    body = t2a_sent(api_sim)
    assert body["model"] == "speech-2.8-hd" and body["voice_setting"]["voice_id"] == "English_Graceful_Lady"


@pytest.mark.parametrize("voice,sent", [
    ("ash", "Deep_Voice_Man"), ("verse", "Friendly_Person"), ("Shimmer", "female-tianmei"),
    ("Cantonese_ProfessionalHost（F)", "Cantonese_ProfessionalHost（F)"),
    ("Chinese (Mandarin)_News_Anchor", "Chinese (Mandarin)_News_Anchor"),
])
def test_voices_map_or_pass_through_byte_for_byte(api_sim, platform_key, voice, sent):
    client(platform_key).audio.speech.create(model="tts-1", voice=voice, input="hi").read()
    assert t2a_sent(api_sim)["voice_setting"]["voice_id"] == sent


def test_a_cloned_voice_passes_and_an_unknown_one_is_a_400_naming_it(api_sim, platform_key):
    api_sim.voices("moss_audio_1234abcd")
    client(platform_key).audio.speech.create(model="tts-1", voice="moss_audio_1234abcd", input="hi").read()
    with pytest.raises(openai.BadRequestError) as e:
        client(platform_key).audio.speech.create(model="tts-1", voice="nobody_here", input="hi")
    assert "nobody_here" in e.value.message and e.value.body["param"] == "voice"


def test_speed_reaches_the_platform_and_outside_its_range_is_a_400(api_sim, platform_key):
    client(platform_key).audio.speech.create(model="tts-1", voice="alloy", input="quick", speed=1.5).read()
    assert t2a_sent(api_sim)["voice_setting"]["speed"] == 1.5
    with pytest.raises(openai.BadRequestError) as e:
        client(platform_key).audio.speech.create(model="tts-1", voice="alloy", input="slow", speed=0.3)
    assert "0.5 to 2.0" in e.value.message and e.value.body["param"] == "speed"


def test_aac_is_a_400_listing_what_is_made(api_sim, platform_key):
    with pytest.raises(openai.BadRequestError) as e:
        client(platform_key).audio.speech.create(model="tts-1", voice="alloy", input="x", response_format="aac")
    assert "mp3, opus, flac, wav or pcm" in e.value.message
    assert api_sim.requests("/v1/t2a_v2") == []


@pytest.mark.parametrize("code,status,words", [(1008, 503, "out of credits"), (2049, 401, "MINIMAX_API_REGION"),
                                              (1002, 429, "throttled"), (1042, 400, "invisible")])
def test_speech_errors_before_the_first_byte_have_real_statuses(api_sim, platform_key, code, status, words):
    api_sim.fault(code, endpoint="t2a")
    with pytest.raises(openai.APIStatusError) as e:
        client(platform_key).audio.speech.create(model="tts-1", voice="alloy", input="x")
    assert e.value.status_code == status and words in e.value.message, e.value.message


def test_a_speech_failing_mid_stream_is_cut_never_passed_off_as_whole(api_sim, platform_key):
    """As on Hailuo (test_audio.py): the server cuts the connection; a
    function reports the error to the Runtime API, whose trailer the
    emulator passes on as body bytes. Either way only the first part came."""
    api_sim.fault(1000, endpoint="t2a", after_frames=1)
    chunks, raised = [], None
    try:
        with client(platform_key).audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input="cut") as r:
            assert r.status_code == 200, "the first part was in"
            for chunk in r.iter_bytes():
                chunks.append(chunk)
    except Exception as e:  # the HTTP client's own error type  # noqa: BLE001
        raised = e
    body = b"".join(chunks)
    if ON_SERVER:
        assert raised is not None, "a cut answer was taken for a whole one"
    else:
        body, trailer, _ = body.partition(b"Lambda-Runtime-Function-Error-Type: Runtime.StreamError")
        assert trailer, "the function reported the error to the Runtime API"
    assert 0 < len(body) < api_sim.state()["last_audio"]["size"]


def test_without_a_platform_key_a_deployment_without_speech_says_what_to_add():
    with pytest.raises(openai.BadRequestError) as e:
        client("mmoat_whatever", CODE_URL).audio.speech.create(model="tts-1", voice="alloy", input="x")
    assert "minimax_api_keys" in e.value.message


# Transcription.

def asr_sent(api_sim) -> dict:
    call = api_sim.requests("/v1/speech_to_text")[-1]
    return {"headers": call["headers"], **json.loads(call["body"])}


@pytest.mark.parametrize("name", ["speech.wav", "speech.mp3", "speech.m4a", "speech.flac", "speech.ogg",
                                  "speech.opus.ogg"])
def test_every_accepted_container_goes_to_the_platform_as_it_is(api_sim, platform_key, name):
    data = (AUDIO_DIR / name).read_bytes()
    result = client(platform_key).audio.transcriptions.create(model="whisper-1", file=(name, data), language="en",
                                                              prompt="ignored")
    assert result.text == "Good morning, everyone."
    sent = asr_sent(api_sim)
    assert sent["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert sent["fields"] == {"model": "asr-1.0", "response_format": "json", "stream": "false"}
    assert sent["headers"]["language"] == "en"


def test_webm_is_transcoded_before_it_goes(api_sim, platform_key):
    data = (AUDIO_DIR / "speech.webm").read_bytes()
    client(platform_key, CODE_URL).audio.transcriptions.create(model="whisper-1", file=("speech.webm", data))
    sent = asr_sent(api_sim)["file"]
    assert sent["content_type"] == "audio/mpeg" and sent["name"] == "speech.mp3"
    assert sent["sha256"] != hashlib.sha256(data).hexdigest()


SEGMENTS = [{"start": 0.0, "end": 1.25, "text": "Hello there,", "speaker": 0},
            {"start": 1.25, "end": 3.5, "text": "one two.", "speaker": "1"}]


def test_every_response_format_in_openais_shape(api_sim, platform_key, http):
    c = client(platform_key)
    wav = ("speech.wav", (AUDIO_DIR / "speech.wav").read_bytes())
    api_sim.transcript("Hello there, one two.", 3.5, SEGMENTS)
    r = c.audio.transcriptions.with_raw_response.create(model="whisper-1", file=wav)
    assert json.loads(r.text) == {"text": "Hello there, one two.", "usage": {"type": "duration", "seconds": 4}}
    api_sim.transcript("Hello there, one two.", 3.5, SEGMENTS)
    assert c.audio.transcriptions.create(model="whisper-1", file=wav, response_format="text") == \
        "Hello there, one two.\n"
    api_sim.transcript("Hello there, one two.", 3.5, SEGMENTS)
    v = c.audio.transcriptions.create(model="whisper-1", file=wav, response_format="verbose_json", language="en")
    assert v.duration == 3.5 and v.language == "en" and v.text == "Hello there, one two."
    assert [(s.id, s.start, s.end, s.text) for s in v.segments] == [(0, 0.0, 1.25, "Hello there,"),
                                                                     (1, 1.25, 3.5, "one two.")]
    assert asr_sent(api_sim)["fields"]["response_format"] == "verbose_json"
    api_sim.transcript("Hello there, one two.", 3.5, SEGMENTS)
    srt = c.audio.transcriptions.create(model="whisper-1", file=wav, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,250\nHello there,")
    api_sim.transcript("Hello there, one two.", 3.5, SEGMENTS)
    vtt = c.audio.transcriptions.create(model="whisper-1", file=wav, response_format="vtt")
    assert vtt.startswith("WEBVTT") and "00:00:01.250 --> 00:00:03.500\none two." in vtt


def test_a_recognizer_refusal_reaches_the_caller_with_its_status(api_sim, platform_key):
    api_sim.fault(2013, endpoint="asr", status=400, message="invalid params, audio too long")
    with pytest.raises(openai.BadRequestError) as e:
        client(platform_key).audio.transcriptions.create(
            model="whisper-1", file=("speech.wav", (AUDIO_DIR / "speech.wav").read_bytes()))
    assert "audio too long" in e.value.message


def test_the_model_list_has_the_speech_models(platform_key):
    ids = [m.id for m in client(platform_key).models.list()]
    assert {"tts-1", "tts-1-hd", "whisper-1", "speech-2.8-hd", "asr-1.0"} <= set(ids)
