//! Audio behind the same key, through the real server, the Rust SDK's
//! hand-written media methods and raw HTTP with each provider's own auth
//! header: the worst case reserved from the request, settlement from the
//! provider's figures, the cap refusing before the provider is called, and
//! bad media refused with nothing billed or sent. On SQLite and PostgreSQL.

use futures::StreamExt;
use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, TestServer, backend_tests, mock_toml};
use serde_json::{Value, json};

backend_tests!(
    whisper_bills_the_seconds_the_provider_reports,
    a_cap_of_three_transcriptions_refuses_the_fourth_before_the_provider,
    bad_media_is_refused_with_nothing_billed_or_sent,
    speech_streams_and_bills_characters,
    elevenlabs_bills_the_character_cost_header,
    deepgram_bills_duration_times_channels
);

/// A 16-bit mono 8 kHz WAV holding `frames` frames whose header claims
/// `claimed` frames.
fn wav(frames: u32, claimed: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + claimed * 2).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&8000u32.to_le_bytes());
    v.extend_from_slice(&16000u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(claimed * 2).to_le_bytes());
    v.resize(v.len() + frames as usize * 2, 0);
    v
}

fn seconds_wav(s: u32) -> Vec<u8> {
    wav(8000 * s, 8000 * s)
}

fn file(data: Vec<u8>, name: &str) -> qlaud::AudioFile {
    qlaud::AudioFile { name: name.into(), data, content_type: Some("audio/wav".into()) }
}

async fn usage(t: &TestServer, key_id: &str) -> Value {
    let path = format!("/v1/usage?key_id={key_id}");
    let (status, v) = t.request(reqwest::Method::GET, &path, Some(&t.master_key), None).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn whisper_bills_the_seconds_the_provider_reports(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "listener", "max_spend_usd": 1})).await;
    let client = t.client(key["secret"].as_str().unwrap());
    let answer =
        client.create_transcription("whisper-1", file(seconds_wav(3), "a.wav"), &[]).await.unwrap();
    assert_eq!(answer["text"], "hello from the mock");
    // 3 s at $0.006 a minute: 300 µ$, as reserved.
    assert_eq!(answer["usage"]["seconds"], 3);
    assert_eq!(answer["usage"]["cost_micros"], 300);
    let text = client
        .create_translation(
            "whisper-1",
            file(seconds_wav(2), "b.wav"),
            &[("response_format", "text")],
        )
        .await
        .unwrap();
    assert_eq!(text, Value::String("hello from the mock\n".into()));
    // gpt-4o-transcribe: text and audio tokens and output as reported.
    let answer = client
        .create_transcription("gpt-4o-transcribe", file(seconds_wav(2), "c.wav"), &[])
        .await
        .unwrap();
    // 3 text tokens × $2.5 + 20 audio tokens × $6 + 5 output × $10 per M.
    let expected = (3 * 2_500_000 + 20 * 6_000_000 + 5 * 10_000_000i64 + 999_999) / 1_000_000;
    assert_eq!(answer["usage"]["cost_micros"], expected);
    let id = key["id"].as_str().unwrap();
    assert_eq!(t.settled(id, 3).await, 300 + 200 + expected);
    let v = usage(&t, id).await;
    assert_eq!(v["totals"]["units"]["audio_seconds"], 5, "{v}");
    assert_eq!(v["totals"]["units"]["audio_input_tokens"], 20, "{v}");
    let whisper = v["by_model"].as_array().unwrap().iter().find(|m| m["model"] == "whisper-1");
    assert_eq!(whisper.unwrap()["units"]["audio_seconds"], 5);
    assert_eq!(mock.stats().media_requests, 3);
    // The upstream got the upstream model id and the file.
    assert_eq!(mock.stats().last_body.unwrap()["model"], "gpt-4o-transcribe");
}

async fn a_cap_of_three_transcriptions_refuses_the_fourth_before_the_provider(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    // Three 3-second transcriptions at 300 µ$ each fit in 950 µ$.
    let key = t.mint(json!({"name": "capped", "max_spend_usd": 0.00095})).await;
    let client = t.client(key["secret"].as_str().unwrap());
    for _ in 0..3 {
        client.create_transcription("whisper-1", file(seconds_wav(3), "a.wav"), &[]).await.unwrap();
    }
    let err = client
        .create_transcription("whisper-1", file(seconds_wav(3), "a.wav"), &[])
        .await
        .unwrap_err();
    match err {
        qlaud::RawError::Status { status, body } => {
            assert_eq!(status, 402, "{body}");
            assert_eq!(body["error"]["code"], "spend_cap_reached");
        }
        other => panic!("{other}"),
    }
    assert_eq!(mock.stats().media_requests, 3);
    assert_eq!(t.settled(key["id"].as_str().unwrap(), 3).await, 900);
}

async fn bad_media_is_refused_with_nothing_billed_or_sent(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "hostile"})).await;
    let client = t.client(key["secret"].as_str().unwrap());
    let ten_hours = wav(8000, 8000 * 36_000);
    let truncated = wav(8000, 8000 * 3);
    let big = vec![0u8; 30 * 1024 * 1024];
    let cases: Vec<(&str, qlaud::AudioFile, u16)> = vec![
        ("truncated", file(truncated, "t.wav"), 400),
        ("ten hours", file(ten_hours, "long.wav"), 400),
        ("empty", file(Vec::new(), "e.wav"), 400),
        ("not audio", file(b"just some text, not audio".to_vec(), "notes.txt"), 400),
        ("30 MB", file(big, "big.wav"), 413),
    ];
    for (what, f, status) in cases {
        match client.create_transcription("whisper-1", f, &[]).await.unwrap_err() {
            qlaud::RawError::Status { status: s, body } => {
                assert_eq!(s, status, "{what}: {body}");
                assert!(body["error"]["message"].is_string(), "{what}: {body}");
            }
            qlaud::RawError::Http(e) => assert_eq!(status, 413, "{what}: {e}"),
        }
    }
    // A JSON body where a form belongs.
    let (status, _) = t
        .request(
            reqwest::Method::POST,
            "/v1/audio/transcriptions",
            Some(key["secret"].as_str().unwrap()),
            Some(qlaud_tests::RawBody::Json(json!({"model": "whisper-1"}))),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(mock.stats().media_requests, 0);
    assert_eq!(t.key_spend(key["id"].as_str().unwrap()).await, (0, 0));
}

async fn speech_streams_and_bills_characters(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "speaker"})).await;
    let client = t.client(key["secret"].as_str().unwrap());
    let mut audio = client
        .create_speech(json!({"model": "tts-1", "input": "hello world", "voice": "alloy"}))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = audio.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got.len(), 110);
    // 11 characters at $15 per million.
    assert_eq!(t.settled(key["id"].as_str().unwrap(), 1).await, 165);
    let v = usage(&t, key["id"].as_str().unwrap()).await;
    assert_eq!(v["totals"]["units"]["characters"], 11, "{v}");
    assert_eq!(mock.stats().last_body.unwrap()["model"], "tts-1");
}

async fn elevenlabs_bills_the_character_cost_header(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "eleven"})).await;
    let secret = key["secret"].as_str().unwrap();
    // ElevenLabs' own header carries the qlaud key.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/text-to-speech/voice_1/stream", t.base_url))
        .header("xi-api-key", secret)
        .json(&json!({"text": "hello world", "model_id": "eleven_flash_v2_5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["character-cost"], "6");
    assert_eq!(resp.bytes().await.unwrap().len(), 110);
    let client = t.client(secret);
    let mut audio =
        client.create_elevenlabs_speech("voice_1", json!({"text": "hello"}), &[]).await.unwrap();
    let mut n = 0;
    while let Some(chunk) = audio.next().await {
        n += chunk.unwrap().len();
    }
    assert_eq!(n, 50);
    // 6 + 5 credits at $0.10 per thousand.
    assert_eq!(t.settled(key["id"].as_str().unwrap(), 2).await, 1100);
    assert_eq!(mock.stats().last_path.as_deref(), Some("/v1/text-to-speech/voice_1"));
}

async fn deepgram_bills_duration_times_channels(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "dg"})).await;
    let secret = key["secret"].as_str().unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/listen?model=nova-3&smart_format=true", t.base_url))
        .header("authorization", format!("Token {secret}"))
        .header("content-type", "audio/wav")
        .body(seconds_wav(3))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["metadata"]["duration"], 3.0);
    // 3 s at $0.0043 a minute, rounded up to the micro-dollar.
    assert_eq!(t.settled(key["id"].as_str().unwrap(), 1).await, 216);
    let q = mock.stats().last_body.unwrap();
    assert_eq!((q["model"].as_str(), q["smart_format"].as_str()), (Some("nova-3"), Some("true")));
}
