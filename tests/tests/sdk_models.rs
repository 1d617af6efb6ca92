//! The model endpoints through the Rust SDK, on the offline echo model.

use qlaud::types;
use qlaud_tests::{Backend, TestServer, backend_tests};
use serde_json::json;

backend_tests!(sdk_calls_both_model_shapes);

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
