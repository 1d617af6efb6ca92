"""Media through the official packages, unchanged but for base URL and key:
`openai` (transcriptions of a WAV and an MP3 made here, translations,
speech streamed to a file), `elevenlabs` (convert and stream) and
`deepgram-sdk` 7.x (a file). Each call is billed to its key in the model's
own unit, read back through the wheel's `get_usage`; a key whose cap cannot
cover the call gets 402 before the provider sees it. The wheel's
hand-written media methods are called here too."""

import asyncio
import struct

import pytest

import qlaud as sdk
from conftest import mock_stats


def wav(seconds):
    """`seconds` of 8 kHz 16-bit mono silence: the mock bills 16,000 bytes a second."""
    data = bytes(16000 * seconds)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
            + b"data" + struct.pack("<I", len(data)) + data)


def mp3(seconds):
    """About `seconds` of silent MPEG-1 Layer III: 32 kHz mono at 32 kbps,
    144-byte frames of 1,152 samples whose side info is all zero (no main
    data, so every decoder plays silence). No encoder needed."""
    frames = -(-seconds * 32000 // 1152)
    return (b"\xff\xfb\x18\xc0" + bytes(140)) * frames


def mock_seconds(n_bytes):
    """What the mock reports for an upload (it takes any file as 8 kHz PCM)."""
    return -(-max(n_bytes - 44, 0) // 16000)


@pytest.fixture(scope="module")
def admin(qlaud):
    with qlaud_client(qlaud, qlaud["master_key"]) as client:
        yield client


def qlaud_client(server, key):
    return sdk.Client(api_key=key, base_url=server["base_url"], max_retries=0)


def units(admin, key_id):
    usage = admin.get_usage(key_id=key_id)
    return usage["totals"]["units"], usage["totals"]["cost_micros"]


def test_openai_audio_is_billed_in_seconds_and_characters(qlaud, admin, tmp_path):
    import openai

    key = admin.mint_key(name="py_openai_audio", max_spend_usd=1)
    client = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=key["secret"],
                           max_retries=0)
    a, b = wav(3), mp3(3)
    got = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", a, "audio/wav"))
    assert got.text == "hello from the mock"
    got = client.audio.transcriptions.create(model="whisper-1", file=("b.mp3", b, "audio/mpeg"))
    assert got.text == "hello from the mock"
    got = client.audio.translations.create(model="whisper-1", file=("c.wav", wav(2), "audio/wav"))
    assert got.text == "hello from the mock"
    out = tmp_path / "speech.mp3"
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="hello world"
    ) as resp:
        assert resp.headers["content-type"] == "audio/mpeg"
        resp.stream_to_file(out)
    # The mock answers 10 bytes a character.
    assert out.stat().st_size == 110

    seconds = 3 + mock_seconds(len(b)) + 2
    u, cost = units(admin, key["id"])
    assert u["audio_seconds"] == seconds, u
    assert u["characters"] == 11, u
    # whisper-1 at 100 µ$ a second, tts-1 at 15 µ$ a character.
    assert cost == seconds * 100 + 11 * 15


def test_elevenlabs_convert_and_stream_are_billed_in_characters(qlaud, admin):
    from elevenlabs.client import ElevenLabs

    key = admin.mint_key(name="py_elevenlabs", max_spend_usd=1)
    client = ElevenLabs(base_url=qlaud["base_url"], api_key=key["secret"])
    audio = b"".join(client.text_to_speech.convert(
        voice_id="voice_1", text="hello world", model_id="eleven_multilingual_v2",
        request_options={"max_retries": 0}))
    assert len(audio) == 110
    audio = b"".join(client.text_to_speech.stream(
        voice_id="voice_1", text="hello", model_id="eleven_flash_v2_5",
        request_options={"max_retries": 0}))
    assert len(audio) == 50
    u, cost = units(admin, key["id"])
    # 11 credits, then 5 characters at half a credit each (rounded up): 3.
    assert u["characters"] == 14, u
    assert cost == 14 * 100


def deepgram_client(server, key):
    from deepgram import DeepgramClient, DeepgramClientEnvironment

    http = server["base_url"]
    ws = http.replace("http://", "ws://")
    env = DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)
    return DeepgramClient(api_key=key, environment=env, max_retries=0)


def test_deepgram_transcribes_a_file_billed_in_seconds(qlaud, admin):
    key = admin.mint_key(name="py_deepgram", max_spend_usd=1)
    client = deepgram_client(qlaud, key["secret"])
    resp = client.listen.v1.media.transcribe_file(request=wav(3), model="nova-3",
                                                  smart_format=True)
    assert resp.metadata.duration == 3.0
    assert resp.results.channels[0].alternatives[0].transcript == "hello from the mock"
    u, cost = units(admin, key["id"])
    assert u["audio_seconds"] == 3, u
    # 3 s at $0.0043 a minute, rounded up to the micro-dollar.
    assert cost == 216


def test_a_capped_key_is_refused_with_402_before_the_provider(qlaud, admin, mock):
    import openai
    from elevenlabs.client import ElevenLabs
    from elevenlabs.core.api_error import ApiError as ElevenError
    from deepgram.core.api_error import ApiError as DeepgramError

    key = admin.mint_key(name="py_media_broke", max_spend_usd=0.000001)
    before = mock_stats(mock)["media_requests"]
    oa = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=key["secret"], max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        oa.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(3), "audio/wav"))
    assert e.value.status_code == 402
    with pytest.raises(openai.APIStatusError) as e:
        oa.audio.speech.create(model="tts-1", voice="alloy", input="hello world")
    assert e.value.status_code == 402
    el = ElevenLabs(base_url=qlaud["base_url"], api_key=key["secret"])
    with pytest.raises(ElevenError) as e:
        b"".join(el.text_to_speech.convert(voice_id="voice_1", text="hello",
                                           request_options={"max_retries": 0}))
    assert e.value.status_code == 402
    with pytest.raises(DeepgramError) as e:
        deepgram_client(qlaud, key["secret"]).listen.v1.media.transcribe_file(
            request=wav(3), model="nova-3")
    assert e.value.status_code == 402
    assert mock_stats(mock)["media_requests"] == before
    u, cost = units(admin, key["id"])
    assert cost == 0 and not any(u.values()), u


def test_the_wheels_media_methods(qlaud, admin):
    key = admin.mint_key(name="py_wheel_media", max_spend_usd=1)
    user = qlaud_client(qlaud, key["secret"])
    got = user.create_transcription(file=wav(2), model="whisper-1")
    assert got["text"] == "hello from the mock" and got["usage"]["seconds"] == 2
    got = user.create_transcription(file=mp3(2), model="whisper-1", filename="a.mp3")
    assert got["text"] == "hello from the mock"
    assert user.create_translation(file=wav(1), model="whisper-1",
                                   response_format="text") == "hello from the mock\n"
    assert len(user.create_speech(model="tts-1", input="hi", voice="alloy")) == 20
    assert len(user.create_elevenlabs_speech("voice_1", text="hello")) == 50
    assert len(user.stream_elevenlabs_speech("voice_1", text="hello",
                                             model_id="eleven_flash_v2_5")) == 50
    got = user.transcribe_deepgram(audio=wav(2), content_type="audio/wav", model="nova-3")
    assert got["metadata"]["duration"] == 2.0

    async def run():
        async with sdk.AsyncClient(api_key=key["secret"], base_url=qlaud["base_url"],
                                     max_retries=0) as client:
            return await client.create_speech(model="tts-1", input="hey", voice="alloy")

    assert len(asyncio.run(run())) == 30
    u, _ = units(admin, key["id"])
    assert u["audio_seconds"] == 2 + mock_seconds(len(mp3(2))) + 1 + 2, u
    # tts-1: 2 + 3; ElevenLabs: 5 + 3 credits.
    assert u["characters"] == 5 + 8, u
    with pytest.raises(sdk.BadRequestError):
        user.create_transcription(file=b"not audio", model="whisper-1", filename="x.txt")


def test_openai_videos_create_poll_and_download(qlaud, admin, mock, tmp_path):
    import openai

    key = admin.mint_key(name="py_video", max_spend_usd=1)
    client = openai.OpenAI(base_url=qlaud["base_url"] + "/v1", api_key=key["secret"],
                           max_retries=0)
    video = client.videos.create(prompt="a cat on a piano", model="sora-2", seconds="4",
                                 size="1280x720")
    assert video.status == "queued"
    # The SDK's own polling helper, then a plain retrieve.
    video = client.videos.poll(video.id, poll_interval_ms=10)
    assert video.status == "completed"
    assert client.videos.retrieve(video.id).status == "completed"
    content = client.videos.download_content(video.id, variant="video")
    out = tmp_path / "cat.mp4"
    content.write_to_file(out)
    assert out.stat().st_size == 4000
    u, cost = units(admin, key["id"])
    # 4 s at $0.10, billed once however often it was polled.
    assert u["video_seconds_720p"] == 4, u
    assert cost == 400_000

    # The wheel's hand-written video methods.
    user = qlaud_client(qlaud, key["secret"])
    v = user.create_video(prompt="a dog", seconds="4")
    while v["status"] not in ("completed", "failed"):
        v = user.get_video(v["id"])
    assert v["status"] == "completed"
    assert len(user.get_video_content(v["id"])) == 4000

    # The cap now holds less than a video: 402 before the provider.
    before = mock_stats(mock)["media_requests"]
    with pytest.raises(openai.APIStatusError) as e:
        client.videos.create(prompt="one more", model="sora-2", seconds="4")
    assert e.value.status_code == 402
    assert mock_stats(mock)["media_requests"] == before
