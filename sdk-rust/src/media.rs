//! The media operations, hand-written: their bodies are multipart forms,
//! raw audio and binary answers, which the generated code cannot express.
//! Transcripts come back as JSON (a JSON string for the `text`, `srt` and
//! `vtt` formats); audio as a stream of bytes, as qlaud relays it.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use progenitor_client::ClientInfo as _;

use crate::Client;
use crate::raw::{RawError, error_status, read_json};

/// Audio bytes as they arrive.
pub type AudioStream = Pin<Box<dyn Stream<Item = Result<bytes::Bytes, RawError>> + Send>>;

/// A file to upload.
#[derive(Clone, Debug)]
pub struct AudioFile {
    /// Its name; the extension hints at the format (`speech.mp3`).
    pub name: String,
    pub data: Vec<u8>,
    /// Its type (`audio/mpeg`); `application/octet-stream` when unset.
    pub content_type: Option<String>,
}

impl Client {
    /// `POST /v1/audio/transcriptions`: `file` transcribed by `model`, with
    /// any other form `fields` (`response_format`, `language`, `prompt`, …).
    pub async fn create_transcription(
        &self,
        model: &str,
        file: AudioFile,
        fields: &[(&str, &str)],
    ) -> Result<serde_json::Value, RawError> {
        self.audio_form("/v1/audio/transcriptions", model, file, fields).await
    }

    /// `POST /v1/audio/translations`: `file` translated into English text.
    pub async fn create_translation(
        &self,
        model: &str,
        file: AudioFile,
        fields: &[(&str, &str)],
    ) -> Result<serde_json::Value, RawError> {
        self.audio_form("/v1/audio/translations", model, file, fields).await
    }

    /// `POST /v1/audio/speech` (OpenAI's body: `model`, `input`, `voice`,
    /// …): the audio as it is made.
    pub async fn create_speech(&self, body: serde_json::Value) -> Result<AudioStream, RawError> {
        let request = self.inner.client().post(format!("{}/v1/audio/speech", self.base_url()));
        self.audio(request.json(&body)).await
    }

    /// `POST /v1/listen` (Deepgram): raw `audio` of `content_type`
    /// (`audio/wav`, …), or `application/json` with `{"url": …}`; `query`
    /// carries `model` and Deepgram's options.
    pub async fn transcribe_deepgram(
        &self,
        audio: Vec<u8>,
        content_type: &str,
        query: &[(&str, String)],
    ) -> Result<serde_json::Value, RawError> {
        let request = self
            .inner
            .client()
            .post(format!("{}/v1/listen", self.base_url()))
            .query(query)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(audio);
        read_json(self.send(request).await?).await
    }

    /// `POST /v1/text-to-speech/{voice_id}` (ElevenLabs' body: `text`,
    /// `model_id`, …): the audio as it is made.
    pub async fn create_elevenlabs_speech(
        &self,
        voice_id: &str,
        body: serde_json::Value,
        query: &[(&str, String)],
    ) -> Result<AudioStream, RawError> {
        let path = format!("/v1/text-to-speech/{}", progenitor_client::encode_path(voice_id));
        let request = self.inner.client().post(format!("{}{path}", self.base_url()));
        self.audio(request.query(query).json(&body)).await
    }

    /// `POST /v1/text-to-speech/{voice_id}/stream` (ElevenLabs).
    pub async fn stream_elevenlabs_speech(
        &self,
        voice_id: &str,
        body: serde_json::Value,
        query: &[(&str, String)],
    ) -> Result<AudioStream, RawError> {
        let path =
            format!("/v1/text-to-speech/{}/stream", progenitor_client::encode_path(voice_id));
        let request = self.inner.client().post(format!("{}{path}", self.base_url()));
        self.audio(request.query(query).json(&body)).await
    }

    /// `POST /v1/videos` (OpenAI's Videos form): a video of `prompt` by
    /// `model`, with any other form `fields` (`seconds`, `size`, …) and an
    /// optional `input_reference` image. The answer is the video object to
    /// poll with [`Client::get_video`].
    pub async fn create_video(
        &self,
        model: &str,
        prompt: &str,
        fields: &[(&str, &str)],
        input_reference: Option<AudioFile>,
    ) -> Result<serde_json::Value, RawError> {
        let mut all = vec![("prompt", prompt)];
        all.extend_from_slice(fields);
        let file = input_reference.as_ref().map(|f| ("input_reference", f));
        let (content_type, body) = multipart(model, file, &all);
        let request = self
            .inner
            .client()
            .post(format!("{}/v1/videos", self.base_url()))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        read_json(self.send(request).await?).await
    }

    /// `GET /v1/videos/{video_id}`: the video object (`status`, `progress`).
    pub async fn get_video(&self, video_id: &str) -> Result<serde_json::Value, RawError> {
        let path = format!("/v1/videos/{}", progenitor_client::encode_path(video_id));
        read_json(self.send(self.inner.client().get(format!("{}{path}", self.base_url()))).await?)
            .await
    }

    /// `GET /v1/videos/{video_id}/content`: the MP4 (or `variant`
    /// `thumbnail` / `spritesheet`) as it arrives.
    pub async fn get_video_content(
        &self,
        video_id: &str,
        variant: Option<&str>,
    ) -> Result<AudioStream, RawError> {
        let path = format!("/v1/videos/{}/content", progenitor_client::encode_path(video_id));
        let mut request = self.inner.client().get(format!("{}{path}", self.base_url()));
        if let Some(v) = variant {
            request = request.query(&[("variant", v)]);
        }
        self.audio(request).await
    }

    async fn audio_form(
        &self,
        path: &str,
        model: &str,
        file: AudioFile,
        fields: &[(&str, &str)],
    ) -> Result<serde_json::Value, RawError> {
        let (content_type, body) = multipart(model, Some(("file", &file)), fields);
        let request = self
            .inner
            .client()
            .post(format!("{}{path}", self.base_url()))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        let resp = self.send(request).await?;
        if !resp.status().is_success() {
            return Err(error_status(resp).await);
        }
        let json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"));
        if json {
            resp.json().await.map_err(RawError::Http)
        } else {
            resp.text().await.map(serde_json::Value::String).map_err(RawError::Http)
        }
    }

    async fn audio(&self, request: reqwest::RequestBuilder) -> Result<AudioStream, RawError> {
        let resp = self.send(request).await?;
        if !resp.status().is_success() {
            return Err(error_status(resp).await);
        }
        Ok(Box::pin(resp.bytes_stream().map(|c| c.map_err(RawError::Http))))
    }
}

/// A `multipart/form-data` body, built in memory so that a retry can send
/// it again.
fn multipart(
    model: &str,
    file: Option<(&str, &AudioFile)>,
    fields: &[(&str, &str)],
) -> (String, Vec<u8>) {
    let len = file.map_or(0, |(_, f)| f.data.len());
    let boundary = format!("qlaud-{:016x}", {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(len)
    });
    let mut body = Vec::with_capacity(len + 512);
    let quoted = |s: &str| s.replace(['"', '\r', '\n'], "_");
    let text = |body: &mut Vec<u8>, name: &str, value: &str| {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n",
                quoted(name)
            )
            .as_bytes(),
        );
    };
    text(&mut body, "model", model);
    for (name, value) in fields {
        text(&mut body, name, value);
    }
    if let Some((name, file)) = file {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\n\
                 Content-Type: {}\r\n\r\n",
                quoted(name),
                quoted(&file.name),
                file.content_type.as_deref().unwrap_or("application/octet-stream")
            )
            .as_bytes(),
        );
        body.extend_from_slice(&file.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
