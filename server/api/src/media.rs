//! Media endpoints: speech to text and text to speech in each provider's
//! own wire format (OpenAI's audio API, Deepgram's `/v1/listen`,
//! ElevenLabs' text-to-speech), so each official client works unchanged.
//!
//! Their bodies are multipart forms, raw audio and binary answers, which
//! the generated SDK cannot express: the spec describes them precisely
//! ([`describe`]), and the SDKs carry hand-written methods for them.

use std::marker::PhantomData;

use dropshot::{
    ApiEndpointBodyContentType, Body, ExclusiveExtractor, ExtractorMetadata, FreeformBody,
    HttpError, HttpResponse, HttpResponseOk, RequestContext, ServerContext, TypedBody,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Hard ceiling on a media request body; the configured upload limit
/// (`[media] max_upload_bytes`, 25 MB by default) is enforced below it with
/// 413 before the rest of the body is read.
pub const MEDIA_BODY_MAX_BYTES: usize = 1024 * 1024 * 1024;
/// Body limit of the JSON text-to-speech requests.
pub const SPEECH_BODY_MAX_BYTES: usize = 1024 * 1024;

/// The operations whose bodies or answers the generated SDK cannot express
/// (multipart forms, raw audio, binary answers): hand-written in both SDKs.
pub const MEDIA_OPERATIONS: &[&str] = &[
    "create_transcription",
    "create_translation",
    "create_speech",
    "transcribe_deepgram",
    "create_elevenlabs_speech",
    "stream_elevenlabs_speech",
    "create_video",
    "get_video",
    "get_video_content",
];

/// A request body read by the handler itself, after the key in the headers
/// was checked; documented in the spec as `T` in the endpoint's content
/// type.
pub struct RawBody<T> {
    pub body: Body,
    _schema: PhantomData<fn() -> T>,
}

#[async_trait::async_trait]
impl<T: JsonSchema + serde::de::DeserializeOwned + Send + Sync + 'static> ExclusiveExtractor
    for RawBody<T>
{
    async fn from_request<C: ServerContext>(
        _rqctx: &RequestContext<C>,
        request: http::Request<Body>,
    ) -> Result<Self, HttpError> {
        Ok(RawBody { body: request.into_body(), _schema: PhantomData })
    }

    fn metadata(content_type: ApiEndpointBodyContentType) -> ExtractorMetadata {
        <TypedBody<T> as ExclusiveExtractor>::metadata(content_type)
    }
}

/// A binary answer (audio), streamed as the provider sends it.
pub struct BinaryResponse(pub http::Response<Body>);

impl HttpResponse for BinaryResponse {
    fn to_result(self) -> Result<http::Response<Body>, HttpError> {
        Ok(self.0)
    }

    fn response_metadata() -> dropshot::ApiEndpointResponse {
        <HttpResponseOk<FreeformBody> as HttpResponse>::response_metadata()
    }

    fn status_code(&self) -> http::StatusCode {
        self.0.status()
    }
}

/// `POST /v1/audio/transcriptions` and `/translations`: OpenAI's form.
/// Parts qlaud does not name pass to the provider unchanged.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct TranscriptionForm {
    /// The audio file: WAV, MP3, M4A (MP4), OGG, FLAC or WebM; at most the
    /// configured upload limit (25 MB) and audio length (2 hours).
    #[schemars(schema_with = "binary")]
    pub file: String,
    /// A transcription model's public name in qlaud (`whisper-1`,
    /// `gpt-4o-transcribe`, `gpt-4o-mini-transcribe`).
    pub model: String,
    /// `json` (default), `text`, `srt`, `verbose_json` or `vtt`.
    pub response_format: Option<String>,
    /// Text to guide the model's style; billed as input tokens by the
    /// token-billed models.
    pub prompt: Option<String>,
    /// The audio's language (ISO-639-1); transcriptions only.
    pub language: Option<String>,
    pub temperature: Option<f64>,
}

fn binary(_: &mut schemars::r#gen::SchemaGenerator) -> schemars::schema::Schema {
    schemars::schema::SchemaObject {
        instance_type: Some(schemars::schema::InstanceType::String.into()),
        format: Some("binary".into()),
        ..Default::default()
    }
    .into()
}

/// `POST /v1/audio/speech`: OpenAI's request. Fields qlaud does not know
/// pass to the provider unchanged.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct SpeechRequest {
    /// A speech model's public name in qlaud (`tts-1`, `tts-1-hd`,
    /// `gpt-4o-mini-tts`).
    pub model: String,
    /// The text to speak (at most 4,096 characters).
    pub input: String,
    /// The voice (`alloy`, `echo`, …).
    pub voice: Value,
    /// `mp3` (default), `opus`, `aac`, `flac`, `wav` or `pcm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: serde_json::Map<String, Value>,
}

/// `POST /v1/text-to-speech/{voice_id}[/stream]`: ElevenLabs' request.
/// Fields qlaud does not know pass to the provider unchanged.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
pub struct ElevenLabsSpeechRequest {
    /// The text to speak.
    pub text: String,
    /// The model's public name in qlaud (default `eleven_multilingual_v2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: serde_json::Map<String, Value>,
}

/// The voice of an ElevenLabs request.
#[derive(Deserialize, JsonSchema)]
pub struct VoicePath {
    pub voice_id: String,
}

/// ElevenLabs' query parameters (any others pass through too).
#[derive(Deserialize, JsonSchema)]
pub struct ElevenLabsQuery {
    /// `mp3_44100_128` (default), `pcm_16000`, …
    pub output_format: Option<String>,
}

/// Deepgram's query parameters (any others, `smart_format`, `punctuate`,
/// …, pass through too).
#[derive(Deserialize, JsonSchema)]
pub struct ListenQuery {
    /// A Deepgram model's public name in qlaud (default `nova-3`).
    pub model: Option<String>,
    /// Bill and transcribe each channel separately.
    pub multichannel: Option<bool>,
}

/// `POST /v1/listen` with a JSON body: audio fetched by Deepgram from a URL.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct ListenUrl {
    /// Where Deepgram fetches the audio.
    pub url: String,
}

/// `POST /v1/videos`: OpenAI's Videos form (the Sora 2 shape). Parts
/// qlaud does not name pass to the provider unchanged.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
pub struct VideoForm {
    /// What the video shows.
    pub prompt: String,
    /// A video model's public name in qlaud (`sora-2`, the default, or
    /// `sora-2-pro`).
    pub model: Option<String>,
    /// Length in whole seconds, as text (`"4"`, the default, `"8"`,
    /// `"12"`); at most 60.
    pub seconds: Option<String>,
    /// `WIDTHxHEIGHT`: `720x1280` (default), `1280x720`, `1024x1792`,
    /// `1792x1024`. The size's tier (its short side) picks the price.
    pub size: Option<String>,
    /// An image the video starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "binary")]
    pub input_reference: Option<String>,
}

/// A video, by the id its provider gave it.
#[derive(Deserialize, JsonSchema)]
pub struct VideoPath {
    pub video_id: String,
}

/// Which rendition of a video to download.
#[derive(Deserialize, JsonSchema)]
pub struct VideoContentQuery {
    /// `video` (default, MP4), `thumbnail` or `spritesheet`.
    pub variant: Option<String>,
}

/// The spec's media bodies and answers as precisely as OpenAPI says them
/// (dropshot documents one content type per body, and binary answers
/// without a type): run on the generated document.
pub fn describe(spec: &mut Value) {
    let audio_out = |what: &str| {
        json!({"description": what, "content": {
            "audio/mpeg": {"schema": {"type": "string", "format": "binary"}},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
        }})
    };
    let paths = &mut spec["paths"];
    for path in ["/v1/audio/speech", "/v1/text-to-speech/{voice_id}"] {
        paths[path]["post"]["responses"]["200"] =
            audio_out("The audio, streamed as the provider produces it.");
    }
    paths["/v1/text-to-speech/{voice_id}/stream"]["post"]["responses"]["200"] =
        audio_out("The audio, streamed as the provider produces it.");
    for path in ["/v1/audio/transcriptions", "/v1/audio/translations"] {
        let ok = &mut paths[path]["post"]["responses"]["200"]["content"];
        ok["text/plain"] = json!({"schema": {"type": "string"}});
    }
    paths["/v1/videos/{video_id}/content"]["get"]["responses"]["200"] = json!({
    "description": "The video (MP4) or the image asked for, streamed as it arrives.",
    "content": {
        "video/mp4": {"schema": {"type": "string", "format": "binary"}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }});
    let listen = &mut paths["/v1/listen"]["post"];
    let url_body = listen["requestBody"]["content"]["application/json"].take();
    listen["requestBody"] = json!({"required": true, "content": {
        "audio/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "application/json": url_body
    }});
}
