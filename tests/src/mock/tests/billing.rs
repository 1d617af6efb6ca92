//! Billing modes, chosen by the model name like the faults.

use serde_json::{Value, json};

use super::{anthropic, anthropic_events, anthropic_text, openai, openai_chunks, read_all};
use crate::mock::{MockUpstream, TOOL_ARGS};

/// Bytes of `v` as compact JSON: a greedy provider's input before allowances.
fn compact_len(v: &Value) -> u64 {
    serde_json::to_string(v).unwrap().len() as u64
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// OpenAI streamed content per choice index.
fn openai_texts(chunks: &[Value], n: usize) -> Vec<String> {
    let mut texts = vec![String::new(); n];
    for choice in chunks.iter().filter_map(|c| c["choices"].as_array()).flatten() {
        let i = usize::try_from(choice["index"].as_u64().unwrap()).unwrap();
        texts[i].push_str(choice["delta"]["content"].as_str().unwrap_or(""));
    }
    texts
}

#[tokio::test]
async fn greedy_anthropic_bills_body_bytes_and_the_limit() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "claude-greedy", "max_tokens": 12, "system": "be brief",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi there", "cache_control": {"type": "ephemeral"}}]}]});
    let v: Value = anthropic(&mock, body.clone()).await.json().await.unwrap();
    assert_eq!(v["usage"]["input_tokens"], compact_len(&body));
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(v["usage"]["output_tokens"], 12);
    assert_eq!(v["stop_reason"], "max_tokens");
    let text = v["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("Hello from mock: hi there more more"), "{text}");
    assert_eq!(words(text), 12);
    let s = mock.stats();
    assert_eq!((s.input_tokens, s.output_tokens, s.cached_tokens), (compact_len(&body), 12, 0));

    // Payload strings give way to 100 per image and 100,000 per document,
    // nested ones included.
    let (png, img_url, doc_url) =
        ("iVBORw0KGgo=", "https://example.com/cat.png", "https://example.com/a.pdf");
    let nested = json!({"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}]});
    let body = json!({"model": "claude-greedy", "max_tokens": 3, "stream": true,
        "messages": [{"role": "user", "content": [nested,
            {"type": "image", "source": {"type": "url", "url": img_url}},
            {"type": "document", "source": {"type": "url", "url": doc_url}},
            {"type": "text", "text": "compare"}]}]});
    let input =
        compact_len(&body) - (png.len() + img_url.len() + doc_url.len()) as u64 + 2 * 100 + 100_000;
    mock.reset_stats();
    let (text, clean) = read_all(anthropic(&mock, body).await).await;
    assert!(clean);
    let events = anthropic_events(&text);
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], input);
    assert_eq!(words(&anthropic_text(&events)), 3);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["usage"]["output_tokens"], 3);
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    let s = mock.stats();
    assert_eq!((s.input_tokens, s.output_tokens), (input, 3));
}

#[tokio::test]
async fn greedy_openai_input_allowances() {
    let mock = MockUpstream::start().await;
    let (img, audio, file_data, file_id) = (
        "https://example.com/x.png",
        "UklGRiQAAABXQVZF",
        "data:application/pdf;base64,JVBE",
        "f-1",
    );
    let body = json!({"model": "gpt-greedy", "max_tokens": 2, "user": "cached", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": img, "detail": "high"}},
            {"type": "image_url", "image_url": img},
            {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
            {"type": "file", "file": {"file_data": file_data, "filename": "a.pdf"}},
            {"type": "file", "file": {"file_id": file_id}}]}]});
    let payload = (2 * img.len() + audio.len() + file_data.len() + file_id.len()) as u64;
    let input = compact_len(&body) - payload + 2 * 100 + 3 * 100_000;
    let v: Value = openai(&mock, body).await.json().await.unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], input);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(v["usage"]["completion_tokens_details"]["rejected_prediction_tokens"], 0);
    let s = mock.stats();
    assert_eq!((s.input_tokens, s.output_tokens, s.cached_tokens), (input, 2, 0));
}

#[tokio::test]
async fn greedy_output_limit_is_the_larger_one() {
    let mock = MockUpstream::start().await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    for (max, max_completion) in [(7, 5), (5, 7)] {
        let body = json!({"model": "gpt-greedy", "messages": msgs, "max_tokens": max,
                          "max_completion_tokens": max_completion});
        let v: Value = openai(&mock, body).await.json().await.unwrap();
        assert_eq!(v["usage"]["completion_tokens"], 7);
        assert_eq!(words(v["choices"][0]["message"]["content"].as_str().unwrap()), 7);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
    let v: Value =
        openai(&mock, json!({"model": "gpt-greedy", "messages": msgs})).await.json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 4096);
    let body = json!({"model": "gpt-greedy", "messages": msgs, "max_tokens": 128_001});
    assert_eq!(openai(&mock, body).await.status(), 400);
    assert_eq!(mock.stats().output_tokens, 7 + 7 + 4096);

    // A tool call that fits is kept, filler before it; one that does not is dropped.
    let tools = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
    let ask = json!([{"role": "user", "content": "weather?"}]);
    let body = json!({"model": "claude-greedy", "max_tokens": 20, "tools": tools, "messages": ask});
    let v: Value = anthropic(&mock, body).await.json().await.unwrap();
    assert_eq!(v["content"][1]["input"].to_string(), TOOL_ARGS);
    assert_eq!(words(v["content"][0]["text"].as_str().unwrap()), 10);
    assert_eq!(
        (v["usage"]["output_tokens"].as_u64(), v["stop_reason"].as_str()),
        (Some(20), Some("max_tokens"))
    );
    let body = json!({"model": "claude-greedy", "max_tokens": 9, "tools": tools, "messages": ask});
    let v: Value = anthropic(&mock, body).await.json().await.unwrap();
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    assert_eq!(v["usage"]["output_tokens"], 9);
}

#[tokio::test]
async fn greedy_n_choices_json_and_stream() {
    let mock = MockUpstream::start().await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let body = json!({"model": "gpt-greedy", "n": 3, "max_tokens": 6, "messages": msgs});
    let v: Value = openai(&mock, body).await.json().await.unwrap();
    let choices = v["choices"].as_array().unwrap();
    let indexes: Vec<u64> = choices.iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert!(choices.iter().all(|c| words(c["message"]["content"].as_str().unwrap()) == 6));
    assert_eq!(v["usage"]["completion_tokens"], 18);
    assert_eq!(mock.stats().output_tokens, 18);

    mock.reset_stats();
    let body = json!({"model": "gpt-greedy", "n": 3, "max_completion_tokens": 6, "stream": true,
                      "stream_options": {"include_usage": true}, "messages": msgs});
    let (text, clean) = read_all(openai(&mock, body).await).await;
    assert!(clean);
    let chunks = openai_chunks(&text);
    assert!(openai_texts(&chunks, 3).iter().all(|t| words(t) == 6));
    let usage = &chunks[chunks.len() - 2]["usage"];
    assert_eq!(usage["completion_tokens"], 18);
    let s = mock.stats();
    assert_eq!((s.input_tokens, s.output_tokens), (usage["prompt_tokens"].as_u64().unwrap(), 18));

    // Cut after three output events: one word of each choice.
    mock.reset_stats();
    let body = json!({"model": "gpt-greedy-cut", "n": 3, "max_tokens": 6, "stream": true,
                      "messages": msgs});
    let (_, clean) = read_all(openai(&mock, body).await).await;
    assert!(!clean);
    assert_eq!(mock.stats().output_tokens, 3);

    mock.reset_stats();
    for n in [json!(0), json!(129), json!("2"), json!(1.5)] {
        let body = json!({"model": "gpt-greedy", "n": n, "messages": msgs});
        let resp = openai(&mock, body).await;
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            (v["error"]["param"].as_str(), v["error"]["type"].as_str()),
            (Some("n"), Some("invalid_request_error"))
        );
    }
    let s = mock.stats();
    assert_eq!((s.errors, s.input_tokens, s.output_tokens), (4, 0, 0));
}

#[tokio::test]
async fn greedy_prediction_is_billed_per_choice() {
    let mock = MockUpstream::start().await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let predictions = [
        json!("abc def"),
        json!([{"type": "text", "text": "abc"},
                                               {"type": "text", "text": " def"}]),
    ];
    for (prediction, stream) in predictions.into_iter().zip([false, true]) {
        mock.reset_stats();
        let body = json!({"model": "gpt-greedy", "n": 2, "max_tokens": 3, "stream": stream,
                          "stream_options": {"include_usage": stream}, "messages": msgs,
                          "prediction": {"type": "content", "content": prediction}});
        let (text, _) = read_all(openai(&mock, body).await).await;
        let usage = if stream {
            let chunks = openai_chunks(&text);
            chunks[chunks.len() - 2]["usage"].clone()
        } else {
            serde_json::from_str::<Value>(&text).unwrap()["usage"].clone()
        };
        assert_eq!(usage["completion_tokens"], 2 * (3 + 7));
        assert_eq!(usage["completion_tokens_details"]["rejected_prediction_tokens"], 14);
        assert_eq!(mock.stats().output_tokens, 20);
    }
}

#[tokio::test]
async fn greedy_over_the_window_bills_nothing() {
    let mock = MockUpstream::start().await;
    let doc = json!({"type": "document", "source": {"type": "file", "file_id": "file_1"}});
    let body = json!({"model": "claude-greedy", "max_tokens": 5,
                      "messages": [{"role": "user", "content": vec![doc; 10]}]});
    let input = compact_len(&body) - 10 * "file_1".len() as u64 + 1_000_000;
    let resp = anthropic(&mock, body).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    let error = json!({"type": "invalid_request_error",
                       "message": format!("prompt is too long: {input} tokens > 1000000 maximum")});
    assert_eq!(v, json!({"type": "error", "error": error}));

    let file = json!({"type": "file", "file": {"file_id": "file-1"}});
    let body = json!({"model": "gpt-greedy", "stream": true,
                      "messages": [{"role": "user", "content": vec![file; 10]}]});
    let resp = openai(&mock, body).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["error"]["type"].as_str(), v["error"]["param"].as_str()),
        (Some("invalid_request_error"), Some("messages"))
    );
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("This model's maximum context length is 1000000 tokens.")
    );
    let s = mock.stats();
    assert_eq!((s.errors, s.input_tokens, s.output_tokens), (2, 0, 0));
}

#[tokio::test]
async fn nousage_answers_still_count() {
    let mock = MockUpstream::start().await;
    let msgs = json!([{"role": "user", "content": "one two"}]);
    let v: Value =
        anthropic(&mock, json!({"model": "claude-nousage", "max_tokens": 50, "messages": msgs}))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(v["content"][0]["text"], "Hello from mock: one two");
    assert!(v.get("usage").is_none());
    let body = json!({"model": "claude-nousage", "max_tokens": 50, "stream": true,
                      "messages": msgs});
    let (text, _) = read_all(anthropic(&mock, body).await).await;
    let events = anthropic_events(&text);
    assert!(events.iter().all(|(_, d)| d.get("usage").is_none()));
    assert!(events[0].1["message"].get("usage").is_none());
    assert_eq!(events[events.len() - 2].0, "message_delta");
    let s = mock.stats();
    assert_eq!((s.input_tokens, s.output_tokens), (4, 10));

    mock.reset_stats();
    let v: Value = openai(&mock, json!({"model": "gpt-nousage", "messages": msgs}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock: one two");
    assert!(v.get("usage").is_none());
    for model in ["gpt-nousage", "gpt-greedy-nousage"] {
        let body = json!({"model": model, "stream": true, "max_tokens": 5, "messages": msgs,
                          "stream_options": {"include_usage": true}});
        let (text, clean) = read_all(openai(&mock, body).await).await;
        assert!(clean);
        let chunks = openai_chunks(&text);
        assert!(chunks.iter().all(|c| c.get("usage").is_none()), "{text}");
        assert!(chunks.iter().all(|c| c["choices"] != json!([])), "{text}");
        assert_eq!(chunks.last().unwrap(), "[DONE]");
    }
    let s = mock.stats();
    let greedy_input = compact_len(&json!({"model": "gpt-greedy-nousage", "stream": true,
        "max_tokens": 5, "messages": msgs, "stream_options": {"include_usage": true}}));
    assert_eq!((s.input_tokens, s.output_tokens), (2 + 2 + greedy_input, 5 + 5 + 5));
}
