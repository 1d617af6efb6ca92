//! Video in OpenAI's Videos shape through the real server and the Rust
//! SDK: `seconds` × the size tier's price reserved at create (402 before
//! the provider when it does not fit), held until a poll sees the outcome,
//! settled at that price when completed and at nothing when failed. On
//! SQLite and PostgreSQL.

use futures::StreamExt;
use qlaud_tests::mock::MockUpstream;
use qlaud_tests::{Backend, ServeArgs, TestDb, TestServer, backend_tests, ledger_state, mock_toml};
use serde_json::{Value, json};

backend_tests!(
    a_video_is_polled_to_completion_downloaded_and_billed_once,
    a_failed_video_is_not_billed,
    a_cap_of_three_videos_refuses_the_fourth_before_the_provider,
    bad_video_requests_are_refused_with_nothing_sent,
    a_held_video_outlives_a_crash_and_settles_on_its_poll,
    a_video_nobody_polls_is_settled_by_the_server,
);

/// Waits until the key's held video has settled (nothing reserved).
async fn settled_within(t: &TestServer, key_id: &str, seconds: u64) -> (i64, i64, i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let state = ledger_state(&t.db.url, key_id).await;
        if state.1 == 0 || std::time::Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A client that never polls its video does not hold its budget forever:
/// the server polls it itself and settles at the outcome; one that never
/// finishes is settled at its price once it is older than the maximum age,
/// and marked `expired`.
async fn a_video_nobody_polls_is_settled_by_the_server(backend: Backend) {
    let mock = MockUpstream::start().await;
    let toml = mock_toml(&mock);
    let Some(t) = TestServer::start_configured(backend, Some(&toml), |c| {
        c.video_sweep.every = std::time::Duration::from_millis(200);
        c.video_sweep.max_age = std::time::Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    let key = t.mint(json!({"name": "forgetful", "max_spend_usd": 5})).await;
    let id = key["id"].as_str().unwrap();
    let client = t.client(key["secret"].as_str().unwrap());
    client.create_video("sora-2", "a cat", &[], None).await.unwrap();
    client.create_video("sora-fail", "a storm", &[], None).await.unwrap();
    assert_eq!(ledger_state(&t.db.url, id).await, (0, 800_000, 2));
    // Completed: its price; failed: nothing. Both without a client poll.
    assert_eq!(settled_within(&t, id, 10).await, (400_000, 0, 0));
    assert_eq!(t.settled(id, 2).await, 400_000);

    let stuck = t.mint(json!({"name": "patient", "max_spend_usd": 5})).await;
    let stuck_id = stuck["id"].as_str().unwrap();
    let client = t.client(stuck["secret"].as_str().unwrap());
    let v = client.create_video("sora-stuck", "a slow film", &[], None).await.unwrap();
    // Polled while young: still rendering, still reserved.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(ledger_state(&t.db.url, stuck_id).await, (0, 400_000, 1));
    assert_eq!(settled_within(&t, stuck_id, 10).await, (400_000, 0, 0));
    // A later poll by the client bills nothing more.
    client.get_video(v["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(t.settled(stuck_id, 1).await, 400_000);
}

async fn poll(client: &qlaud::Client, id: &str) -> Value {
    for _ in 0..10 {
        let v = client.get_video(id).await.unwrap();
        if v["status"] == "completed" || v["status"] == "failed" {
            return v;
        }
    }
    panic!("video {id} never finished");
}

async fn a_video_is_polled_to_completion_downloaded_and_billed_once(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "director", "max_spend_usd": 5})).await;
    let id = key["id"].as_str().unwrap();
    let client = t.client(key["secret"].as_str().unwrap());
    let v = client
        .create_video("sora-2-pro", "a cat", &[("seconds", "8"), ("size", "1792x1024")], None)
        .await
        .unwrap();
    assert_eq!(v["status"], "queued");
    // The provider got the seconds and size that were priced.
    let sent = mock.stats().last_body.unwrap();
    assert_eq!((sent["seconds"].as_str(), sent["size"].as_str()), (Some("8"), Some("1792x1024")));
    // Reserved, not settled, while it renders: 8 s × $0.50.
    assert_eq!(ledger_state(&t.db.url, id).await, (0, 4_000_000, 1));
    let video = v["id"].as_str().unwrap();
    let done = poll(&client, video).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(t.settled(id, 1).await, 4_000_000);
    // Polling again bills nothing more.
    client.get_video(video).await.unwrap();
    let mut mp4 = client.get_video_content(video, None).await.unwrap();
    let mut n = 0;
    while let Some(chunk) = mp4.next().await {
        n += chunk.unwrap().len();
    }
    assert_eq!(n, 8000);
    assert_eq!(ledger_state(&t.db.url, id).await, (4_000_000, 0, 0));
    let path = format!("/v1/usage?key_id={id}");
    let (_, usage) = t.request(reqwest::Method::GET, &path, Some(&t.master_key), None).await;
    assert_eq!(usage["totals"]["units"]["video_seconds_1024p"], 8, "{usage}");
    // Another key does not see it.
    let other = t.mint(json!({"name": "other"})).await;
    let err = t.client(other["secret"].as_str().unwrap()).get_video(video).await.unwrap_err();
    assert!(matches!(err, qlaud::RawError::Status { status: 404, .. }), "{err}");
}

async fn a_failed_video_is_not_billed(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "unlucky", "max_spend_usd": 1})).await;
    let id = key["id"].as_str().unwrap();
    let client = t.client(key["secret"].as_str().unwrap());
    let v = client.create_video("sora-fail", "a storm", &[("seconds", "4")], None).await.unwrap();
    assert_eq!(ledger_state(&t.db.url, id).await, (0, 400_000, 1));
    let done = poll(&client, v["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(t.settled(id, 1).await, 0);
    assert_eq!(ledger_state(&t.db.url, id).await, (0, 0, 0));
}

async fn a_cap_of_three_videos_refuses_the_fourth_before_the_provider(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    // Three 4-second sora-2 videos at 400,000 µ$ each fit in $1.30.
    let key = t.mint(json!({"name": "capped", "max_spend_usd": 1.3})).await;
    let client = t.client(key["secret"].as_str().unwrap());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let v = client.create_video("sora-2", "a dog", &[], None).await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let sent = mock.stats().media_requests;
    let err = client.create_video("sora-2", "a dog", &[], None).await.unwrap_err();
    match err {
        qlaud::RawError::Status { status, body } => {
            assert_eq!(status, 402, "{body}");
            assert_eq!(body["error"]["code"], "spend_cap_reached");
        }
        other => panic!("{other}"),
    }
    assert_eq!(mock.stats().media_requests, sent);
    // Held reservations count against the cap until they settle.
    for id in &ids {
        poll(&client, id).await;
    }
    assert_eq!(t.settled(key["id"].as_str().unwrap(), 3).await, 1_200_000);
    let err = client.create_video("sora-2", "a dog", &[], None).await.unwrap_err();
    assert!(matches!(err, qlaud::RawError::Status { status: 402, .. }), "{err}");
}

async fn bad_video_requests_are_refused_with_nothing_sent(backend: Backend) {
    let mock = MockUpstream::start().await;
    let Some(t) = TestServer::start_with(backend, Some(&mock_toml(&mock))).await else { return };
    let key = t.mint(json!({"name": "hostile"})).await;
    let client = t.client(key["secret"].as_str().unwrap());
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        ("no prompt", "", &[]),
        ("seconds not a number", "x", &[("seconds", "ten")]),
        ("too long", "x", &[("seconds", "3600")]),
        ("unpriced size", "x", &[("size", "1792x1024")]),
        ("bad size", "x", &[("size", "big")]),
    ];
    for (what, prompt, fields) in cases {
        match client.create_video("sora-2", prompt, fields, None).await.unwrap_err() {
            qlaud::RawError::Status { status, body } => assert_eq!(status, 400, "{what}: {body}"),
            other => panic!("{what}: {other}"),
        }
    }
    let err = client.create_video("whisper-1", "x", &[], None).await.unwrap_err();
    assert!(matches!(err, qlaud::RawError::Status { status: 400, .. }), "{err}");
    assert_eq!(mock.stats().media_requests, 0);
    assert_eq!(t.key_spend(key["id"].as_str().unwrap()).await, (0, 0));
}

/// Crash recovery settles the requests of a dead process at their
/// reservation; a video's held reservation is not one of them: it stays
/// open across the restart and its poll settles it at the price.
async fn a_held_video_outlives_a_crash_and_settles_on_its_poll(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let mock = MockUpstream::start().await;
    let serve = ServeArgs::new(&db, &mock, &["--instance-timeout-secs", "1"]);
    let first = serve.spawn().await;
    let master: Value = first.boot();
    let master = master["master_key"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let key: Value = first.mint(&master, json!({"name": "survivor", "max_spend_usd": 1})).await;
    let (secret, key_id) = (key["secret"].as_str().unwrap(), key["id"].as_str().unwrap());
    let form = reqwest::multipart::Form::new().text("model", "sora-2").text("prompt", "a boat");
    let video: Value = http
        .post(format!("{}/v1/videos", first.base_url()))
        .bearer_auth(secret)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    first.kill().await;
    let second = serve.spawn().await;
    // Well past the dead process's timeout and a recovery round.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(ledger_state(&db.url, key_id).await, (0, 400_000, 1));
    let url = format!("{}/v1/videos/{}", second.base_url(), video["id"].as_str().unwrap());
    for _ in 0..2 {
        let resp = http.get(&url).bearer_auth(secret).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(ledger_state(&db.url, key_id).await, (400_000, 0, 0));
}
