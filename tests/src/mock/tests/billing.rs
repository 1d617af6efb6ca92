//! Billing modes, chosen by the model name like the faults.

use serde_json::{Value, json};

use super::{anthropic, anthropic_events, openai, openai_chunks, read_all};
use crate::mock::MockUpstream;

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
    let body = json!({"model": "gpt-nousage", "stream": true, "max_tokens": 5, "messages": msgs,
                      "stream_options": {"include_usage": true}});
    let (text, clean) = read_all(openai(&mock, body).await).await;
    assert!(clean);
    let chunks = openai_chunks(&text);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "{text}");
    assert!(chunks.iter().all(|c| c["choices"] != json!([])), "{text}");
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    let s = mock.stats();
    assert_eq!((s.input_tokens, s.output_tokens), (2 + 2, 5 + 5));
}
