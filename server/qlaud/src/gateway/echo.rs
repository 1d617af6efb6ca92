//! Answers of the offline `echo` model, written by the same encoders that
//! translate providers' answers.

use dropshot::Body;
use http::Response;

use super::error::GatewayError;
use super::{Call, ClientEncoder, Shape, json_response, sse, sse_response};
use crate::meter::Usage;
use crate::providers::echo::Reply;
use crate::providers::ir::Event;
use crate::store::new_id;

pub(super) async fn answer(
    mut call: Call,
    reply: Reply,
    client_wants_usage: bool,
) -> Result<Response<Body>, GatewayError> {
    let id = match call.shape {
        Shape::Messages | Shape::Threads => new_id("msg"),
        Shape::ChatCompletions | Shape::Embeddings => new_id("chatcmpl"),
        Shape::Responses => new_id("resp"),
    };
    // Like a provider, the offline model reads no more than its window.
    if reply.usage.input_tokens > call.model().context_window {
        call.settle(400, Usage::default()).await;
        return Err(GatewayError::bad_request(format!(
            "prompt is too long: {} tokens > {} maximum",
            reply.usage.input_tokens,
            call.model().context_window
        )));
    }
    // Nothing leaves the process, but the answer is billed like any other.
    call.metered.sent();
    if !call.metered.streamed {
        let cost = call.settle(200, reply.usage).await;
        let mut v =
            ClientEncoder::completion(call.shape, &reply.completion(id), &call.model().name, cost);
        call.keep(&mut v).await;
        return Ok(json_response(&call, &v, cost));
    }
    let (tx, body) = sse::channel();
    let response = sse_response(&call, body);
    let drain = call.drain.clone();
    // The offline answer is whole at once: it only waits on the client.
    drain.clone().spawn(async move {
        let mut encoder = ClientEncoder::new(call.shape, call.model(), client_wants_usage);
        if let Some(keep) = &call.keep {
            encoder.echo(keep.echo());
        }
        // Its events report usage at the end, like OpenAI's.
        encoder.start_input(reply.usage.input_tokens);
        let mut sent = 0u64;
        let mut done = true;
        let cut = drain.cut_off();
        tokio::pin!(cut);
        'events: for event in reply.events(id) {
            let is_text = matches!(event, Event::Text(_));
            for bytes in encoder.encode(event) {
                let delivered = tokio::select! {
                    biased;
                    () = &mut cut => false,
                    ok = sse::send(&tx, bytes) => ok,
                };
                if !delivered {
                    done = false;
                    break 'events;
                }
            }
            sent += u64::from(is_text);
        }
        // A client that left early pays for the words it was sent.
        let usage = if done { reply.usage } else { Usage { output_tokens: sent, ..reply.usage } };
        call.settle(if done { 200 } else { 499 }, usage).await;
        if let Some(mut response) = encoder.final_response().filter(|_| done) {
            call.keep(&mut response).await;
        }
    });
    Ok(response)
}
