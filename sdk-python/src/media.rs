//! The media operations, hand-written like their Rust SDK methods (their
//! bodies are multipart forms and raw audio, their answers binary): the
//! upload as `bytes` in, a transcript (dict, or str for text formats) or
//! the audio as `bytes` out.

use futures::StreamExt;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::client::{AsyncClient, Client, Sdk};
use crate::convert::{CallError, Output};

/// Keyword arguments as form fields or query pairs (`True` → `true`).
fn pairs(extra: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (k, v) in extra.into_iter().flatten() {
        if v.is_none() {
            continue;
        }
        let value = if let Ok(b) = v.extract::<bool>() {
            b.to_string()
        } else if let Ok(s) = v.extract::<String>() {
            s
        } else {
            v.str()?.extract()?
        };
        out.push((k.extract()?, value));
    }
    Ok(out)
}

fn json_body(
    extra: Option<&Bound<'_, PyDict>>,
) -> PyResult<serde_json::Map<String, serde_json::Value>> {
    let mut body = serde_json::Map::new();
    crate::convert::put_all(&mut body, extra)?;
    Ok(body)
}

async fn audio(stream: Result<qlaud::AudioStream, qlaud::RawError>) -> Result<Output, CallError> {
    let mut stream = stream.map_err(CallError::raw)?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(CallError::raw)?);
    }
    Ok(Output::Bytes(out))
}

mod ops {
    use super::*;

    pub async fn form(
        sdk: Sdk,
        translation: bool,
        model: String,
        file: Vec<u8>,
        filename: String,
        fields: Vec<(String, String)>,
    ) -> Result<Output, CallError> {
        let file = qlaud::AudioFile { name: filename, data: file, content_type: None };
        let fields: Vec<(&str, &str)> =
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let answer = if translation {
            sdk.create_translation(&model, file, &fields).await
        } else {
            sdk.create_transcription(&model, file, &fields).await
        };
        answer.map(Output::Json).map_err(CallError::raw)
    }

    pub async fn speech(
        sdk: Sdk,
        body: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Output, CallError> {
        audio(sdk.create_speech(serde_json::Value::Object(body)).await).await
    }

    pub async fn elevenlabs(
        sdk: Sdk,
        voice_id: String,
        stream: bool,
        body: serde_json::Map<String, serde_json::Value>,
        query: Vec<(String, String)>,
    ) -> Result<Output, CallError> {
        let q: Vec<(&str, String)> = query.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let body = serde_json::Value::Object(body);
        if stream {
            audio(sdk.stream_elevenlabs_speech(&voice_id, body, &q).await).await
        } else {
            audio(sdk.create_elevenlabs_speech(&voice_id, body, &q).await).await
        }
    }

    pub async fn create_video(
        sdk: Sdk,
        model: String,
        prompt: String,
        input_reference: Option<(Vec<u8>, String)>,
        fields: Vec<(String, String)>,
    ) -> Result<Output, CallError> {
        let fields: Vec<(&str, &str)> =
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let image =
            input_reference.map(|(data, name)| qlaud::AudioFile { name, data, content_type: None });
        sdk.create_video(&model, &prompt, &fields, image)
            .await
            .map(Output::Json)
            .map_err(CallError::raw)
    }

    pub async fn get_video(sdk: Sdk, video_id: String) -> Result<Output, CallError> {
        sdk.get_video(&video_id).await.map(Output::Json).map_err(CallError::raw)
    }

    pub async fn get_video_content(
        sdk: Sdk,
        video_id: String,
        variant: Option<String>,
    ) -> Result<Output, CallError> {
        audio(sdk.get_video_content(&video_id, variant.as_deref()).await).await
    }

    pub async fn deepgram(
        sdk: Sdk,
        audio: Option<Vec<u8>>,
        url: Option<String>,
        content_type: String,
        query: Vec<(String, String)>,
    ) -> Result<Output, CallError> {
        let q: Vec<(&str, String)> = query.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let (data, ct) = match (audio, url) {
            (Some(a), None) => (a, content_type),
            (None, Some(u)) => (
                serde_json::to_vec(&serde_json::json!({"url": u})).unwrap_or_default(),
                "application/json".into(),
            ),
            _ => return Err(CallError::Invalid("give either audio or url".into())),
        };
        sdk.transcribe_deepgram(data, &ct, &q).await.map(Output::Json).map_err(CallError::raw)
    }
}

#[pymethods]
impl Client {
    /// Transcribe audio (OpenAI Audio API). `POST /v1/audio/transcriptions`
    #[pyo3(signature = (*, file, model, filename = "audio.wav", **fields))]
    fn create_transcription<'py>(
        &self,
        py: Python<'py>,
        file: Vec<u8>,
        model: String,
        filename: &str,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let fields = pairs(fields)?;
        let sdk = self.core.sdk();
        self.core.call(py, ops::form(sdk, false, model, file, filename.to_string(), fields))
    }

    /// Translate audio into English (OpenAI Audio API). `POST /v1/audio/translations`
    #[pyo3(signature = (*, file, model, filename = "audio.wav", **fields))]
    fn create_translation<'py>(
        &self,
        py: Python<'py>,
        file: Vec<u8>,
        model: String,
        filename: &str,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let fields = pairs(fields)?;
        let sdk = self.core.sdk();
        self.core.call(py, ops::form(sdk, true, model, file, filename.to_string(), fields))
    }

    /// Generate speech (OpenAI Audio API): the audio as bytes. `POST /v1/audio/speech`
    #[pyo3(signature = (**body))]
    fn create_speech<'py>(
        &self,
        py: Python<'py>,
        body: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let body = json_body(body)?;
        let sdk = self.core.sdk();
        self.core.call(py, ops::speech(sdk, body))
    }

    /// Generate speech (ElevenLabs): the audio as bytes. `POST /v1/text-to-speech/{voice_id}`
    #[pyo3(signature = (voice_id, *, query = None, **body))]
    fn create_elevenlabs_speech<'py>(
        &self,
        py: Python<'py>,
        voice_id: String,
        query: Option<&Bound<'py, PyDict>>,
        body: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let (body, query) = (json_body(body)?, pairs(query)?);
        let sdk = self.core.sdk();
        self.core.call(py, ops::elevenlabs(sdk, voice_id, false, body, query))
    }

    /// Stream generated speech (ElevenLabs): the audio as bytes. `POST /v1/text-to-speech/{voice_id}/stream`
    #[pyo3(signature = (voice_id, *, query = None, **body))]
    fn stream_elevenlabs_speech<'py>(
        &self,
        py: Python<'py>,
        voice_id: String,
        query: Option<&Bound<'py, PyDict>>,
        body: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let (body, query) = (json_body(body)?, pairs(query)?);
        let sdk = self.core.sdk();
        self.core.call(py, ops::elevenlabs(sdk, voice_id, true, body, query))
    }

    /// Transcribe audio (Deepgram): raw `audio`, or a `url`. `POST /v1/listen`
    #[pyo3(signature = (*, audio = None, url = None, content_type = "application/octet-stream", **query))]
    fn transcribe_deepgram<'py>(
        &self,
        py: Python<'py>,
        audio: Option<Vec<u8>>,
        url: Option<String>,
        content_type: &str,
        query: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let query = pairs(query)?;
        let sdk = self.core.sdk();
        self.core.call(py, ops::deepgram(sdk, audio, url, content_type.to_string(), query))
    }

    /// Create a video (OpenAI Videos API): the video object to poll. `POST /v1/videos`
    #[pyo3(signature = (*, prompt, model = "sora-2", input_reference = None, input_reference_name = "reference.png", **fields))]
    fn create_video<'py>(
        &self,
        py: Python<'py>,
        prompt: String,
        model: &str,
        input_reference: Option<Vec<u8>>,
        input_reference_name: &str,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let fields = pairs(fields)?;
        let image = input_reference.map(|d| (d, input_reference_name.to_string()));
        let sdk = self.core.sdk();
        self.core.call(py, ops::create_video(sdk, model.to_string(), prompt, image, fields))
    }

    /// Fetch a video (OpenAI Videos API): its status. `GET /v1/videos/{video_id}`
    fn get_video<'py>(&self, py: Python<'py>, video_id: String) -> PyResult<Py<PyAny>> {
        let sdk = self.core.sdk();
        self.core.call(py, ops::get_video(sdk, video_id))
    }

    /// Download a video (OpenAI Videos API): the MP4 as bytes. `GET /v1/videos/{video_id}/content`
    #[pyo3(signature = (video_id, *, variant = None))]
    fn get_video_content<'py>(
        &self,
        py: Python<'py>,
        video_id: String,
        variant: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let sdk = self.core.sdk();
        self.core.call(py, ops::get_video_content(sdk, video_id, variant))
    }
}

#[pymethods]
impl AsyncClient {
    /// Transcribe audio (OpenAI Audio API). `POST /v1/audio/transcriptions`
    #[pyo3(signature = (*, file, model, filename = "audio.wav", **fields))]
    fn create_transcription<'py>(
        &self,
        py: Python<'py>,
        file: Vec<u8>,
        model: String,
        filename: &str,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fields = pairs(fields)?;
        let sdk = self.core.sdk();
        self.core.spawn(py, ops::form(sdk, false, model, file, filename.to_string(), fields))
    }

    /// Translate audio into English (OpenAI Audio API). `POST /v1/audio/translations`
    #[pyo3(signature = (*, file, model, filename = "audio.wav", **fields))]
    fn create_translation<'py>(
        &self,
        py: Python<'py>,
        file: Vec<u8>,
        model: String,
        filename: &str,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fields = pairs(fields)?;
        let sdk = self.core.sdk();
        self.core.spawn(py, ops::form(sdk, true, model, file, filename.to_string(), fields))
    }

    /// Generate speech (OpenAI Audio API): the audio as bytes. `POST /v1/audio/speech`
    #[pyo3(signature = (**body))]
    fn create_speech<'py>(
        &self,
        py: Python<'py>,
        body: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let body = json_body(body)?;
        let sdk = self.core.sdk();
        self.core.spawn(py, ops::speech(sdk, body))
    }

    /// Generate speech (ElevenLabs): the audio as bytes. `POST /v1/text-to-speech/{voice_id}`
    #[pyo3(signature = (voice_id, *, query = None, **body))]
    fn create_elevenlabs_speech<'py>(
        &self,
        py: Python<'py>,
        voice_id: String,
        query: Option<&Bound<'py, PyDict>>,
        body: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (body, query) = (json_body(body)?, pairs(query)?);
        let sdk = self.core.sdk();
        self.core.spawn(py, ops::elevenlabs(sdk, voice_id, false, body, query))
    }

    /// Stream generated speech (ElevenLabs): the audio as bytes. `POST /v1/text-to-speech/{voice_id}/stream`
    #[pyo3(signature = (voice_id, *, query = None, **body))]
    fn stream_elevenlabs_speech<'py>(
        &self,
        py: Python<'py>,
        voice_id: String,
        query: Option<&Bound<'py, PyDict>>,
        body: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (body, query) = (json_body(body)?, pairs(query)?);
        let sdk = self.core.sdk();
        self.core.spawn(py, ops::elevenlabs(sdk, voice_id, true, body, query))
    }

    /// Transcribe audio (Deepgram): raw `audio`, or a `url`. `POST /v1/listen`
    #[pyo3(signature = (*, audio = None, url = None, content_type = "application/octet-stream", **query))]
    fn transcribe_deepgram<'py>(
        &self,
        py: Python<'py>,
        audio: Option<Vec<u8>>,
        url: Option<String>,
        content_type: &str,
        query: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let query = pairs(query)?;
        let sdk = self.core.sdk();
        self.core.spawn(py, ops::deepgram(sdk, audio, url, content_type.to_string(), query))
    }

    /// Create a video (OpenAI Videos API): the video object to poll. `POST /v1/videos`
    #[pyo3(signature = (*, prompt, model = "sora-2", input_reference = None, input_reference_name = "reference.png", **fields))]
    fn create_video<'py>(
        &self,
        py: Python<'py>,
        prompt: String,
        model: &str,
        input_reference: Option<Vec<u8>>,
        input_reference_name: &str,
        fields: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fields = pairs(fields)?;
        let image = input_reference.map(|d| (d, input_reference_name.to_string()));
        let sdk = self.core.sdk();
        self.core.spawn(py, ops::create_video(sdk, model.to_string(), prompt, image, fields))
    }

    /// Fetch a video (OpenAI Videos API): its status. `GET /v1/videos/{video_id}`
    fn get_video<'py>(&self, py: Python<'py>, video_id: String) -> PyResult<Bound<'py, PyAny>> {
        let sdk = self.core.sdk();
        self.core.spawn(py, ops::get_video(sdk, video_id))
    }

    /// Download a video (OpenAI Videos API): the MP4 as bytes. `GET /v1/videos/{video_id}/content`
    #[pyo3(signature = (video_id, *, variant = None))]
    fn get_video_content<'py>(
        &self,
        py: Python<'py>,
        video_id: String,
        variant: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let sdk = self.core.sdk();
        self.core.spawn(py, ops::get_video_content(sdk, video_id, variant))
    }
}
