use qlaud::types::{MintKeyRequest, Usd};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let admin = qlaud::Client::from_env()?; // QLAUD_API_KEY (an admin key), QLAUD_BASE_URL
    let request = MintKeyRequest::builder().name("user_42").max_spend_usd(Usd(5.0));
    let key = admin.mint_key().body(request).send().await?; // one key per end user

    let user = qlaud::Client::new(admin.base_url(), &key.secret)?;
    let reply = user
        .create_message_json(serde_json::json!({"model": "echo", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Hello!"}]}))
        .await?;
    println!("{}", reply["content"][0]["text"].as_str().unwrap_or_default());

    let usage = admin.get_usage().key_id(&key.id).send().await?;
    println!("user_42 spent {} micro-dollars", usage.totals.cost_micros);
    Ok(())
}
