//! The model endpoints through the Rust SDK, on the offline echo model.

use qlaud::types;
use qlaud_tests::{Backend, TestServer, backend_tests};
use serde_json::json;

backend_tests!(sdk_calls_both_model_shapes, sdk_streams_both_model_shapes);

async fn sdk_calls_both_model_shapes(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    let user = admin
        .mint_key()
        .body(types::MintKeyRequest::builder().name("sdk_user"))
        .send()
        .await
        .unwrap()
        .into_inner();
    let client = t.client(&user.secret);
    let message = client
        .create_message()
        .body(
            types::MessagesRequest::builder()
                .model("echo")
                .max_tokens(Some(20))
                .messages(vec![json!({"role": "user", "content": "hello sdk"})]),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(message.content[0]["text"], "echo: hello sdk");
    assert_eq!(message.usage.output_tokens, 3);
    assert!(message.usage.cost_micros.unwrap() > 0);
    let completion = client
        .create_chat_completion()
        .body(
            types::ChatCompletionRequest::builder()
                .model("echo")
                .messages(vec![json!({"role": "user", "content": "hello sdk"})]),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(completion.choices[0]["message"]["content"], "echo: hello sdk");
    assert_eq!(completion.usage.unwrap().completion_tokens, 3);
    let models = client.list_models().send().await.unwrap().into_inner();
    assert!(models.data.iter().any(|m| m.id == "echo"));
    // Errors come back typed in each endpoint's own shape.
    let err = client
        .create_message()
        .body(types::MessagesRequest::builder().model("nope").messages(vec![]))
        .send()
        .await
        .unwrap_err();
    match err {
        qlaud::Error::ErrorResponse(e) => {
            assert_eq!(e.status().as_u16(), 404);
            assert_eq!(e.error.type_, "not_found_error");
        }
        other => panic!("unexpected {other:?}"),
    }
    t.stop().await;
}

async fn sdk_streams_both_model_shapes(backend: Backend) {
    use futures::StreamExt;
    let Some(t) = TestServer::start(backend).await else { return };
    let client = t.client(&t.master_key);
    let mut text = String::new();
    let mut names = Vec::new();
    let mut events = client
        .create_message_stream(json!({"model": "echo", "max_tokens": 20,
                                      "messages": [{"role": "user", "content": "stream me"}]}))
        .await
        .unwrap();
    while let Some(e) = events.next().await {
        let e = e.unwrap();
        if e.event.as_deref() == Some("content_block_delta") {
            text.push_str(e.json().unwrap()["delta"]["text"].as_str().unwrap());
        }
        names.push(e.event.unwrap_or_default());
    }
    assert_eq!(text, "echo: stream me");
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));

    // The same stream, typed.
    let typed: Vec<qlaud::MessageEvent> = client
        .create_message_stream(json!({"model": "echo", "max_tokens": 20,
                                      "messages": [{"role": "user", "content": "stream me"}]}))
        .await
        .unwrap()
        .map(|e| e.unwrap().message_event().unwrap())
        .collect()
        .await;
    let mut typed_text = String::new();
    let mut cost = None;
    for e in &typed {
        match e {
            qlaud::MessageEvent::ContentBlockDelta {
                delta: qlaud::ContentDelta::TextDelta { text },
                ..
            } => typed_text.push_str(text),
            qlaud::MessageEvent::MessageDelta { usage: Some(u), .. } => cost = u.cost_micros,
            qlaud::MessageEvent::Unknown => panic!("every echo event is known"),
            _ => {}
        }
    }
    assert!(matches!(typed[0], qlaud::MessageEvent::MessageStart { .. }));
    assert_eq!(typed_text, "echo: stream me");
    assert!(cost.unwrap() > 0);

    let chunks: Vec<qlaud::SseEvent> = client
        .create_chat_completion_stream(json!({"model": "echo", "stream_options": {"include_usage": true},
                                              "messages": [{"role": "user", "content": "stream me"}]}))
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert!(chunks.last().unwrap().is_done());
    let usage = chunks[chunks.len() - 2].json().unwrap();
    assert!(usage["usage"]["cost_micros"].as_i64().unwrap() > 0);
    let typed: Vec<qlaud::ChatChunk> =
        chunks.iter().filter_map(|c| c.chat_chunk().unwrap()).collect();
    let said: String =
        typed.iter().flat_map(|c| &c.choices).filter_map(|c| c.delta.content.clone()).collect();
    assert_eq!(said, "echo: stream me");
    assert!(typed.last().unwrap().usage.as_ref().unwrap().cost_micros.unwrap() > 0);

    match client.create_message_stream(json!({"model": "nope", "messages": []})).await {
        Err(qlaud::RawError::Status { status, body }) => {
            assert_eq!(status, 404);
            assert_eq!(body["error"]["type"], "not_found_error");
        }
        other => panic!("expected a 404, got {:?}", other.map(|_| ())),
    }
    t.stop().await;
}
