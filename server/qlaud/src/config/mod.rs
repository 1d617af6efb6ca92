//! Providers and models: built-in defaults (`defaults.toml`), overridden by
//! an optional `qlaud.toml`, with base URLs and keys from the environment.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use qlaud_api::Usd;

use crate::units::Unit;
use serde::Deserialize;

const DEFAULTS: &str = include_str!("defaults.toml");

/// The context window of a model configured without one: at least the
/// largest any current model has, so a reservation bounded by it is still
/// an upper bound.
pub const DEFAULT_CONTEXT_WINDOW: u64 = 2_000_000;

/// Bounds on how often one request may reach a provider: every attempt is
/// admitted and may be billed, so these stay small.
const MAX_RETRIES: u32 = 5;
const MAX_FALLBACKS: usize = 4;

/// What kind of API a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI's Chat Completions API.
    Openai,
    /// Another service speaking OpenAI's Chat Completions API.
    OpenaiCompatible,
    /// Perplexity's Agent API (OpenAI's Responses shape at `/v1/responses`,
    /// with web search tools billed per invocation).
    Perplexity,
    /// qlaud's built-in offline model.
    Echo,
    /// ElevenLabs' text-to-speech API (`xi-api-key`).
    Elevenlabs,
    /// Deepgram's speech-to-text API (`Authorization: Token`).
    Deepgram,
    /// qlaud's in-process embedding model (the one search uses).
    Local,
}

/// What a model is called for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Messages, chat completions (and the dialects built on them).
    #[default]
    Chat,
    /// `POST /v1/embeddings`.
    Embedding,
    /// Speech to text: `POST /v1/audio/transcriptions` and `/translations`
    /// (OpenAI), `POST /v1/listen` (Deepgram).
    Transcription,
    /// Text to speech: `POST /v1/audio/speech` (OpenAI),
    /// `POST /v1/text-to-speech/{voice_id}` (ElevenLabs).
    Speech,
    /// Video generation: `POST /v1/videos` (OpenAI's Videos API shape).
    Video,
}

/// Limits on uploaded media.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaLimits {
    /// The largest upload accepted (OpenAI's own limit: 25 MB); larger
    /// ones are refused with 413 before the rest is read.
    pub max_upload_bytes: u64,
    /// The longest audio accepted, in seconds (2 hours); it also sizes the
    /// reservation of audio qlaud cannot measure (a URL).
    pub max_audio_seconds: u64,
}

impl Default for MediaLimits {
    fn default() -> MediaLimits {
        MediaLimits { max_upload_bytes: 25 * 1024 * 1024, max_audio_seconds: 2 * 3600 }
    }
}

/// Default rate limits for keys that set none of their own.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Requests per window for every key of every tenant without its own.
    pub max_requests_per_minute: Option<u64>,
    /// Tokens per window, likewise.
    pub max_tokens_per_minute: Option<u64>,
    /// The window's length: 60 s. Only tests shorten it, so the official
    /// clients' retry after a 429 doesn't wait a whole minute.
    pub window_secs: u64,
    /// A tenant's own defaults (by tenant id), replacing the ones above.
    pub tenants: BTreeMap<String, TenantRateLimits>,
}

impl Default for RateLimits {
    fn default() -> RateLimits {
        RateLimits {
            max_requests_per_minute: None,
            max_tokens_per_minute: None,
            window_secs: 60,
            tenants: BTreeMap::new(),
        }
    }
}

/// One tenant's default rate limits.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantRateLimits {
    pub max_requests_per_minute: Option<u64>,
    pub max_tokens_per_minute: Option<u64>,
}

impl RateLimits {
    /// The defaults that apply to `tenant_id`'s keys (requests, tokens).
    pub fn for_tenant(&self, tenant_id: &str) -> (Option<u64>, Option<u64>) {
        match self.tenants.get(tenant_id) {
            Some(t) => (t.max_requests_per_minute, t.max_tokens_per_minute),
            None => (self.max_requests_per_minute, self.max_tokens_per_minute),
        }
    }

    pub fn window_ms(&self) -> i64 {
        i64::try_from(self.window_secs.clamp(1, 3600) * 1000).unwrap_or(60_000)
    }
}

/// How a failed provider call is tried again: the same model up to its
/// `retries`, then each of its `fallbacks`, only while nothing of the
/// answer has reached the client.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Retries of the same model for models that set none (0: the client's
    /// own retry, which the official clients do, is the only one).
    pub max_retries: u32,
    /// The first wait before a retry, doubled for each further one.
    pub initial_backoff_ms: u64,
    /// The longest wait: a provider asking (`retry-after`) for longer is not
    /// retried, and the next fallback, if any, is tried at once.
    pub max_backoff_ms: u64,
}

impl Default for Retries {
    fn default() -> Retries {
        Retries { max_retries: 0, initial_backoff_ms: 250, max_backoff_ms: 5_000 }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    rate_limits: Option<RateLimits>,
    #[serde(default)]
    retries: Option<Retries>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderSpec>,
    #[serde(default)]
    models: BTreeMap<String, ModelSpec>,
    media: Option<MediaLimits>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderSpec {
    kind: ProviderKind,
    base_url: Option<String>,
    base_url_env: Option<String>,
    default_base_url: Option<String>,
    api_key_env: Option<String>,
    /// The key itself; prefer `api_key_env` so the key stays out of files.
    api_key: Option<String>,
    /// Seconds to wait for the provider's answer to start, and between two
    /// pieces of a stream.
    timeout_secs: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    provider: String,
    /// The provider's id for the model; the public name when left out.
    upstream: Option<String>,
    display_name: Option<String>,
    #[serde(default)]
    kind: ModelKind,
    /// Required for chat models.
    #[serde(default)]
    max_output_tokens: u64,
    /// The most input tokens the model reads; bounds every reservation.
    context_window: Option<u64>,
    /// Characters billed per character of text (ElevenLabs' credits per
    /// character: 0.5 for its Flash and Turbo models), as a decimal.
    credits_per_character: Option<String>,
    prices: Option<PriceSpec>,
    /// Chat models tried in order when this one fails before answering.
    #[serde(default)]
    fallbacks: Vec<String>,
    /// Retries of this model itself (`retries.max_retries` when unset).
    retries: Option<u32>,
}

/// Prices as written in the file: unit name → decimal US dollars per
/// million units (`input = "3"` is $3 per million input tokens;
/// `requests = "10000"` is $0.01 a request). `input`, `output`,
/// `cache_read` and `cache_write` name the token units.
type PriceSpec = BTreeMap<String, String>;

/// A provider ready to call.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash.
    pub base_url: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

pub use crate::units::Prices;

/// A model qlaud serves.
#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub display_name: String,
    pub upstream: String,
    pub kind: ModelKind,
    pub provider: Arc<Provider>,
    pub max_output_tokens: u64,
    /// The most input tokens one request can be billed for.
    pub context_window: u64,
    /// `None`: no price configured, so the model is refused.
    pub prices: Option<Prices>,
    /// Characters billed per character of text, in millionths (1,000,000
    /// unless the provider bills a model's characters at a discount).
    pub credits_per_character_millionths: u64,
    /// Chat models tried in order when this one fails before answering
    /// (checked at load: chat models that exist).
    pub fallbacks: Vec<String>,
    /// Retries of this model itself before its fallbacks.
    pub retries: u32,
}

/// Every provider and model, resolved.
#[derive(Debug, Default)]
pub struct Catalog {
    models: HashMap<String, Arc<Model>>,
    /// Public names, sorted, for listing.
    order: Vec<String>,
    pub media: MediaLimits,
    /// Default per-key rate limits.
    pub rate_limits: RateLimits,
    pub retries: Retries,
}

impl Catalog {
    /// The built-in defaults with `file` (a qlaud.toml) on top.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Catalog> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut config: FileConfig = toml::from_str(DEFAULTS).context("built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let user: FileConfig =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            config.providers.extend(user.providers);
            config.models.extend(user.models);
            config.media = user.media.or(config.media);
            config.rate_limits = user.rate_limits.or(config.rate_limits);
            config.retries = user.retries.or(config.retries);
        }
        Catalog::resolve(config, env)
    }

    fn resolve(
        config: FileConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Catalog> {
        let mut providers = HashMap::new();
        for (name, spec) in config.providers {
            let base_url = spec
                .base_url
                .or_else(|| spec.base_url_env.as_deref().and_then(&env))
                .or(spec.default_base_url)
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string();
            anyhow::ensure!(
                matches!(spec.kind, ProviderKind::Echo | ProviderKind::Local)
                    || base_url.starts_with("http"),
                "provider {name}: base_url must be an http(s) URL, got {base_url:?}"
            );
            let provider = Provider {
                api_key: spec.api_key.or_else(|| spec.api_key_env.as_deref().and_then(&env)),
                kind: spec.kind,
                base_url,
                timeout: Duration::from_secs(spec.timeout_secs.unwrap_or(600)),
                name: name.clone(),
            };
            providers.insert(name, Arc::new(provider));
        }
        let retries = config.retries.unwrap_or_default();
        anyhow::ensure!(
            retries.max_retries <= MAX_RETRIES,
            "retries.max_retries must be at most {MAX_RETRIES}"
        );
        let chat: std::collections::HashSet<&str> = config
            .models
            .iter()
            .filter(|(_, m)| m.kind == ModelKind::Chat)
            .map(|(n, _)| n.as_str())
            .collect();
        for (name, spec) in &config.models {
            for fallback in &spec.fallbacks {
                anyhow::ensure!(
                    spec.kind == ModelKind::Chat,
                    "model {name}: only chat models have fallbacks"
                );
                anyhow::ensure!(
                    chat.contains(fallback.as_str()) && fallback != name,
                    "model {name}: fallback {fallback:?} is not another chat model"
                );
            }
            anyhow::ensure!(
                spec.fallbacks.len() <= MAX_FALLBACKS,
                "model {name}: at most {MAX_FALLBACKS} fallbacks"
            );
            anyhow::ensure!(
                spec.retries.unwrap_or(0) <= MAX_RETRIES,
                "model {name}: retries must be at most {MAX_RETRIES}"
            );
            // Media calls speak their provider's own format and are not
            // retried by qlaud (their clients retry): a setting that would
            // do nothing is refused rather than ignored.
            anyhow::ensure!(
                spec.retries.is_none() || spec.kind == ModelKind::Chat,
                "model {name}: only chat models are retried by qlaud"
            );
        }
        let mut models = HashMap::new();
        for (name, spec) in config.models {
            let provider = providers
                .get(&spec.provider)
                .with_context(|| format!("model {name}: no provider named {:?}", spec.provider))?;
            let media_only =
                matches!(provider.kind, ProviderKind::Elevenlabs | ProviderKind::Deepgram);
            let media = matches!(
                spec.kind,
                ModelKind::Transcription | ModelKind::Speech | ModelKind::Video
            );
            anyhow::ensure!(
                !media_only || media,
                "model {name}: provider {} serves only speech or transcription models",
                spec.provider
            );
            anyhow::ensure!(
                !media || provider.kind != ProviderKind::Echo,
                "model {name}: the echo provider serves no media models"
            );
            anyhow::ensure!(
                provider.kind != ProviderKind::Local || spec.kind == ModelKind::Embedding,
                "model {name}: the local provider serves only its embedding model"
            );
            anyhow::ensure!(
                spec.kind != ModelKind::Chat || spec.max_output_tokens > 0,
                "model {name}: a chat model needs max_output_tokens"
            );
            let prices = spec
                .prices
                .map(|p| resolve_prices(p, provider.kind, spec.kind))
                .transpose()
                .with_context(|| format!("model {name}: prices"))?;
            let credits = match &spec.credits_per_character {
                None => 1_000_000,
                Some(v) => Usd::parse_decimal(v)
                    .map(Usd::micros)
                    .map_err(|e| anyhow::anyhow!("model {name}: credits_per_character {e}"))?
                    .try_into()
                    .unwrap_or(0),
            };
            anyhow::ensure!(credits > 0, "model {name}: credits_per_character must be positive");
            let model = Model {
                credits_per_character_millionths: credits,
                display_name: spec.display_name.unwrap_or_else(|| name.clone()),
                upstream: spec.upstream.unwrap_or_else(|| name.clone()),
                kind: spec.kind,
                provider: provider.clone(),
                max_output_tokens: spec.max_output_tokens,
                context_window: spec.context_window.unwrap_or(DEFAULT_CONTEXT_WINDOW),
                prices,
                retries: spec.retries.unwrap_or(retries.max_retries),
                fallbacks: spec.fallbacks,
                name: name.clone(),
            };
            models.insert(name, Arc::new(model));
        }
        let mut order: Vec<String> = models.keys().cloned().collect();
        order.sort();
        let rate_limits = config.rate_limits.unwrap_or_default();
        for (what, v) in [
            ("max_requests_per_minute", rate_limits.max_requests_per_minute),
            ("max_tokens_per_minute", rate_limits.max_tokens_per_minute),
        ] {
            anyhow::ensure!(v != Some(0), "rate_limits.{what} must be at least 1");
        }
        Ok(Catalog { models, order, media: config.media.unwrap_or_default(), rate_limits, retries })
    }

    pub fn model(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    /// Models in name order.
    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.order.iter().filter_map(|n| self.models.get(n))
    }
}

/// Resolves a price table: exact decimals into micro-dollars per million
/// units. A model that is called for tokens must price both input and
/// output, so no part of a call is served at $0 by accident.
fn resolve_prices(
    spec: PriceSpec,
    provider: ProviderKind,
    kind: ModelKind,
) -> anyhow::Result<Prices> {
    let mut prices = Prices::default();
    for (name, value) in spec {
        let unit = Unit::named(match name.as_str() {
            "input" => "input_tokens",
            "output" => "output_tokens",
            "cache_read" => "cache_read_tokens",
            "cache_write" => "cache_write_tokens",
            other => other,
        });
        anyhow::ensure!(
            !unit.as_str().is_empty()
                && unit
                    .as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "unit {name:?}: use lower-case letters, digits and _"
        );
        let micros = Usd::parse_decimal(&value)
            .map(Usd::micros)
            .map_err(|e| anyhow::anyhow!("{name} {e}"))?;
        prices.set(unit, micros).map_err(|_| {
            anyhow::anyhow!("at most {} priced units per model", crate::units::MAX_UNITS)
        })?;
    }
    let tokens = matches!(
        provider,
        ProviderKind::Anthropic
            | ProviderKind::Openai
            | ProviderKind::OpenaiCompatible
            | ProviderKind::Perplexity
            | ProviderKind::Echo
    );
    let needed: &[Unit] = match kind {
        ModelKind::Chat => &[Unit::INPUT_TOKENS, Unit::OUTPUT_TOKENS],
        ModelKind::Embedding => &[Unit::INPUT_TOKENS],
        // Media models are billed in units of their own (audio seconds,
        // characters, audio tokens): any, but at least one.
        // Video: one `video_seconds_<tier>` per size tier it renders.
        ModelKind::Transcription | ModelKind::Speech | ModelKind::Video => {
            anyhow::ensure!(!prices.is_empty(), "a media model needs at least one price");
            &[]
        }
    };
    if tokens {
        for unit in needed {
            anyhow::ensure!(prices.get(*unit).is_some(), "{} needs a price", unit.as_str());
        }
    }
    Ok(prices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_with_env_base_urls() {
        let config: FileConfig = toml::from_str(DEFAULTS).unwrap();
        let catalog = Catalog::resolve(config, |name| match name {
            "ANTHROPIC_BASE_URL" => Some("http://127.0.0.1:9/".to_string()),
            "ANTHROPIC_API_KEY" => Some("k".to_string()),
            _ => None,
        })
        .unwrap();
        let opus = catalog.model("claude-opus-4-7").unwrap();
        assert_eq!(opus.provider.base_url, "http://127.0.0.1:9");
        assert_eq!(opus.provider.api_key.as_deref(), Some("k"));
        assert_eq!(opus.prices.unwrap().of(Unit::OUTPUT_TOKENS), 25_000_000);
        let gpt = catalog.model("gpt-5.4").unwrap();
        assert_eq!(gpt.provider.base_url, "https://api.openai.com/v1");
        assert_eq!(gpt.prices.unwrap().of(Unit::CACHE_READ_TOKENS), 125_000);
        assert!(catalog.model("echo").is_some());
    }

    #[test]
    fn fallbacks_must_be_other_chat_models() {
        let with = |extra: &str| {
            let mut config: FileConfig = toml::from_str(DEFAULTS).unwrap();
            let user: FileConfig = toml::from_str(extra).unwrap();
            config.models.extend(user.models);
            config.retries = user.retries.or(config.retries);
            Catalog::resolve(config, |_| None)
        };
        let model = |fallbacks: &str| {
            format!(
                "[models.m]\nprovider = \"anthropic\"\nmax_output_tokens = 10\n\
                 prices = {{ input = \"1\", output = \"1\" }}\nfallbacks = {fallbacks}\n"
            )
        };
        let ok = with(&model(r#"["gpt-5.4", "echo"]"#)).unwrap();
        let m = ok.model("m").unwrap();
        assert_eq!(m.fallbacks, ["gpt-5.4", "echo"]);
        assert_eq!((m.retries, ok.retries.max_retries), (0, 0));
        assert!(with(&model(r#"["nope"]"#)).is_err());
        assert!(with(&model(r#"["m"]"#)).is_err());
        assert!(with(&model(r#"["text-embedding-3-small"]"#)).is_err());
        assert!(with("[retries]\nmax_retries = 99\n").is_err());
        let embedding = "[models.e]\nprovider = \"openai\"\nkind = \"embedding\"\n\
                         prices = { input = \"1\" }\nretries = 1\n";
        let Err(err) = with(embedding) else { panic!("retries on an embedding model refused") };
        let err = err.to_string();
        assert!(err.contains("only chat models are retried"), "{err}");
    }
}
