//! Registered tools end to end through the Rust SDK: register, read, list
//! and delete; names unique per tenant (also under concurrency); every
//! validation rule; admin keys only; tenants apart; pages in both
//! directions; and the store's lookups by name that thread turns use. On
//! SQLite and PostgreSQL.

use std::num::NonZeroU32;

use futures::TryStreamExt;
use qlaud::types;
use qlaud_server::store::NewTool;
use qlaud_tests::{Backend, RawBody, TestServer, backend_tests};
use reqwest::Method;
use serde_json::{Map, Value, json};

backend_tests!(
    tool_lifecycle_through_the_sdk,
    names_are_unique_per_tenant,
    concurrent_registrations_of_one_name_admit_one,
    tools_page_in_both_directions,
    standard_keys_are_refused,
    other_tenants_tools_are_not_found,
    bad_input_is_refused_and_stores_nothing,
    lookups_by_name_for_turns,
);

const HOOK: &str = "http://127.0.0.1:9/hook";

fn status<E>(err: &qlaud::Error<E>) -> Option<u16> {
    err.status().map(|s| s.as_u16())
}

fn limit(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn order_schema() -> Map<String, Value> {
    object(json!({
        "type": "object",
        "properties": {"order_id": {"type": "string", "description": "The order's number"}},
        "required": ["order_id"],
    }))
}

fn request(name: &str) -> types::builder::CreateToolRequest {
    types::CreateToolRequest::builder()
        .name(name)
        .description("Looks an order up by its number.")
        .input_schema(order_schema())
        .webhook_url(HOOK)
}

async fn register(client: &qlaud::Client, name: &str) -> types::Tool {
    client.create_tool().body(request(name)).send().await.unwrap().into_inner()
}

async fn ids(client: &qlaud::Client) -> Vec<String> {
    let all: Vec<types::Tool> = client.list_tools().stream().try_collect().await.unwrap();
    all.into_iter().map(|t| t.id).collect()
}

async fn tool_lifecycle_through_the_sdk(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    let created = admin.create_tool().body(request("lookup_order")).send().await.unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let created = created.into_inner();
    assert!(created.id.starts_with("tool_"), "{}", created.id);
    assert_eq!(created.object, "tool");
    assert_eq!(created.name, "lookup_order");
    assert_eq!(created.description, "Looks an order up by its number.");
    assert_eq!(created.input_schema, order_schema());
    assert_eq!(created.webhook_url, HOOK);
    assert_eq!(created.timeout_secs, 30, "the default timeout");
    assert_eq!(created.created_at, created.updated_at);

    let slow = admin
        .create_tool()
        .body(request("slow-report").timeout_secs(Some(300)))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(slow.timeout_secs, 300);

    let got = admin.get_tool().tool_id(&created.id).send().await.unwrap().into_inner();
    assert_eq!(got.id, created.id);
    assert_eq!(got.input_schema, created.input_schema);
    assert_eq!(got.created_at, created.created_at);
    assert_eq!(ids(&admin).await, [slow.id.as_str(), created.id.as_str()], "newest first");

    let deleted = admin.delete_tool().tool_id(&created.id).send().await.unwrap().into_inner();
    assert_eq!(deleted.id, created.id);
    assert_eq!(deleted.object, "tool.deleted");
    assert!(deleted.deleted);
    let err = admin.get_tool().tool_id(&created.id).send().await.unwrap_err();
    assert_eq!(status(&err), Some(404));
    let err = admin.delete_tool().tool_id(&created.id).send().await.unwrap_err();
    assert_eq!(status(&err), Some(404));
    assert_eq!(ids(&admin).await, [slow.id.as_str()]);
    // The name is free again at once, under a new id.
    let again = register(&admin, "lookup_order").await;
    assert_ne!(again.id, created.id);
    t.stop().await;
}

async fn names_are_unique_per_tenant(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    let first = register(&admin, "lookup_order").await;
    let (code, body) = t
        .request(
            Method::POST,
            "/v1/tools",
            Some(&t.master_key),
            Some(RawBody::Json(json!({
                "name": "lookup_order",
                "description": "Another description",
                "input_schema": {"type": "object"},
                "webhook_url": "https://example.com/other",
            }))),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error_code"], "Conflict", "{body}");
    assert!(body["message"].as_str().unwrap().contains("lookup_order"), "{body}");
    // The first registration is untouched and still the only one.
    let kept = admin.get_tool().tool_id(&first.id).send().await.unwrap().into_inner();
    assert_eq!(kept.webhook_url, HOOK);
    assert_eq!(ids(&admin).await, [first.id.as_str()]);
    // Names are case-sensitive, as the providers' are.
    register(&admin, "Lookup_Order").await;
    // Another tenant may use the same name.
    let (_, other_master) = t.create_tenant("other").await;
    let theirs = register(&t.client(&other_master), "lookup_order").await;
    assert_ne!(theirs.id, first.id);
    t.stop().await;
}

async fn concurrent_registrations_of_one_name_admit_one(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    let attempts = (0..8).map(|_| {
        let admin = admin.clone();
        async move { admin.create_tool().body(request("racy")).send().await }
    });
    let results = futures::future::join_all(attempts).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts =
        results.iter().filter(|r| matches!(r, Err(e) if status(e) == Some(409))).count();
    assert_eq!((won, conflicts), (1, 7));
    assert_eq!(ids(&admin).await.len(), 1);
    t.stop().await;
}

async fn tools_page_in_both_directions(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    for i in 0..7 {
        register(&admin, &format!("tool_{i}")).await;
    }
    let all: Vec<types::Tool> = admin.list_tools().stream().try_collect().await.unwrap();
    let keys: Vec<_> = all.iter().map(|t| (t.created_at, t.id.clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted, "newest first, ties by id");
    assert_eq!(all.len(), 7);
    let newest_first: Vec<_> = all.iter().map(|t| t.id.clone()).collect();

    // Pages of 3 by hand: 3 + 3 + 1, and the last says it is the last.
    let mut seen = Vec::new();
    let mut page = admin.list_tools().limit(limit(3)).send().await.unwrap().into_inner();
    let mut pages = 1;
    loop {
        seen.extend(page.items.iter().map(|t| t.id.clone()));
        let Some(token) = page.next_page.clone() else {
            break;
        };
        page =
            admin.list_tools().limit(limit(3)).page_token(token).send().await.unwrap().into_inner();
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, newest_first);

    // Oldest first, in pages of 2.
    let oldest_first: Vec<types::Tool> = admin
        .list_tools()
        .order(types::SortDirection::Asc)
        .limit(limit(2))
        .stream()
        .try_collect()
        .await
        .unwrap();
    let mut reversed = newest_first.clone();
    reversed.reverse();
    assert_eq!(oldest_first.into_iter().map(|t| t.id).collect::<Vec<_>>(), reversed);

    // `after` and `before` bound by registration, whatever the order.
    let older: Vec<types::Tool> =
        admin.list_tools().before(newest_first[3].as_str()).stream().try_collect().await.unwrap();
    assert_eq!(older.into_iter().map(|t| t.id).collect::<Vec<_>>(), newest_first[4..]);
    let between: Vec<types::Tool> = admin
        .list_tools()
        .after(newest_first[5].as_str())
        .before(newest_first[1].as_str())
        .order(types::SortDirection::Asc)
        .stream()
        .try_collect()
        .await
        .unwrap();
    let mut expect = newest_first[2..5].to_vec();
    expect.reverse();
    assert_eq!(between.into_iter().map(|t| t.id).collect::<Vec<_>>(), expect);

    // Limits: 1 to 100; bounds must name a tool of the tenant.
    let at_max = admin.list_tools().limit(limit(100)).send().await.unwrap().into_inner();
    assert_eq!(at_max.items.len(), 7);
    assert!(at_max.next_page.is_none());
    for bad in ["limit=101", "limit=0", "limit=x", "order=sideways", "after=tool_nope"] {
        let (code, body) =
            t.request(Method::GET, &format!("/v1/tools?{bad}"), Some(&t.master_key), None).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    t.stop().await;
}

async fn standard_keys_are_refused(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let admin = t.client(&t.master_key);
    let tool = register(&admin, "lookup_order").await;
    let user = t.mint(json!({"name": "user_42"})).await;
    let secret = user["secret"].as_str().unwrap();
    let body = json!({"name": "mine", "description": "d", "input_schema": {"type": "object"},
        "webhook_url": HOOK});
    let id = tool.id.as_str();
    let attempts = [
        (Method::POST, "/v1/tools".to_string(), Some(body)),
        (Method::GET, "/v1/tools".to_string(), None),
        (Method::GET, format!("/v1/tools/{id}"), None),
        (Method::DELETE, format!("/v1/tools/{id}"), None),
    ];
    for (method, path, body) in attempts {
        let (code, got) =
            t.request(method.clone(), &path, Some(secret), body.map(RawBody::Json)).await;
        // qlaud's own error shape.
        assert_eq!(code, 403, "{method} {path}: {got}");
        assert_eq!(got["error_code"], "Forbidden", "{got}");
        assert!(got["message"].is_string() && got["request_id"].is_string(), "{got}");
    }
    let err = t.client(secret).create_tool().body(request("mine")).send().await.unwrap_err();
    assert_eq!(status(&err), Some(403));
    let (code, _) = t.request(Method::GET, "/v1/tools", None, None).await;
    assert_eq!(code, 401);
    // Nothing was registered or deleted.
    assert_eq!(ids(&admin).await, [tool.id.as_str()]);
    t.stop().await;
}

async fn other_tenants_tools_are_not_found(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let tool = register(&t.client(&t.master_key), "lookup_order").await;
    let (_, other_master) = t.create_tenant("other").await;
    let id = tool.id.as_str();
    let missing = "tool_00000000000000000000000000000000";
    for method in [Method::GET, Method::DELETE] {
        let path = format!("/v1/tools/{id}");
        let (code, got) = t.request(method.clone(), &path, Some(&other_master), None).await;
        assert_eq!(code, 404, "{method} {path}: {got}");
        // The same answer as for an id that never existed.
        let (code, got_missing) =
            t.request(method.clone(), &path.replace(id, missing), Some(&other_master), None).await;
        assert_eq!(code, 404);
        let normalise = |mut v: Value, tool_id: &str| {
            v["request_id"] = json!("…");
            v["message"] = json!(v["message"].as_str().unwrap().replace(tool_id, "{id}"));
            v
        };
        assert_eq!(normalise(got, id), normalise(got_missing, missing), "{method}");
    }
    let other = t.client(&other_master);
    assert!(ids(&other).await.is_empty());
    let (code, _) =
        t.request(Method::GET, &format!("/v1/tools?after={id}"), Some(&other_master), None).await;
    assert_eq!(code, 400);
    // Still there for its own tenant.
    t.client(&t.master_key).get_tool().tool_id(id).send().await.unwrap();
    t.stop().await;
}

async fn bad_input_is_refused_and_stores_nothing(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let good = json!({
        "name": "lookup_order",
        "description": "Looks an order up.",
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
        "webhook_url": HOOK,
    });
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        RawBody::Json(body)
    };
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        RawBody::Json(body)
    };
    let schema = |s: Value| with("input_schema", s);
    // Over 64 KiB as compact JSON, well under the body limit.
    let huge_properties: Map<String, Value> =
        (0..2500).map(|i| (format!("p{i:05}"), json!({"type": "string"}))).collect();
    let cases: Vec<(&str, RawBody, &str)> = vec![
        ("malformed JSON", RawBody::Text("{\"name\":".into()), ""),
        ("unknown field", with("strict", json!(true)), "unknown field"),
        ("misspelt field", with("timeout", json!(30)), "unknown field"),
        ("no name", without("name"), "name"),
        ("no description", without("description"), "description"),
        ("no input_schema", without("input_schema"), "input_schema"),
        ("no webhook_url", without("webhook_url"), "webhook_url"),
        ("empty name", with("name", json!("")), "name"),
        ("name with a space", with("name", json!("lookup order")), "name"),
        ("name with a dot", with("name", json!("lookup.order")), "name"),
        ("name not ASCII", with("name", json!("commandé")), "name"),
        ("name of 65", with("name", json!("n".repeat(65))), "name"),
        ("name not a string", with("name", json!(5)), ""),
        ("empty description", with("description", json!("")), "description"),
        ("blank description", with("description", json!(" \n\t")), "description"),
        ("description over 16 KiB", with("description", json!("d".repeat(16 * 1024 + 1))), "limit"),
        ("schema a string", schema(json!("object")), ""),
        ("schema an array", schema(json!([{"type": "object"}])), ""),
        ("schema null", schema(Value::Null), ""),
        ("schema without type", schema(json!({"properties": {}})), "\"type\": \"object\""),
        ("schema of a string", schema(json!({"type": "string"})), "\"type\": \"object\""),
        ("schema type list", schema(json!({"type": ["object", "null"]})), "\"type\": \"object\""),
        (
            "schema with a misspelt type",
            schema(json!({"type": "object", "properties": {"id": {"type": "strnig"}}})),
            "not a valid json schema",
        ),
        (
            "schema with required not a list",
            schema(json!({"type": "object", "required": "id"})),
            "not a valid json schema",
        ),
        (
            "schema with a broken pattern",
            schema(json!({"type": "object", "properties": {"id": {"pattern": "(["}}})),
            "not a valid json schema",
        ),
        (
            "schema with a dangling $ref",
            schema(json!({"type": "object", "properties": {"id": {"$ref": "#/$defs/none"}}})),
            "not a valid json schema",
        ),
        (
            "schema with a remote $ref",
            schema(json!({"type": "object",
                "properties": {"id": {"$ref": "https://example.com/id.json"}}})),
            "does not fetch",
        ),
        (
            "schema with an unknown meta-schema",
            schema(json!({"$schema": "https://example.com/meta", "type": "object"})),
            "meta-schema",
        ),
        (
            "schema over 64 KiB",
            schema(json!({"type": "object", "properties": huge_properties})),
            "limit",
        ),
        // The outbound policy decides (tests/tests/webhooks.rs has the
        // strict server, where plain http and private addresses are refused).
        ("ftp URL", with("webhook_url", json!("ftp://example.com/hook")), "webhook_url"),
        ("URL with a user", with("webhook_url", json!("https://a@example.com/")), "webhook_url"),
        ("metadata address", with("webhook_url", json!("https://169.254.169.254/")), "webhook_url"),
        ("empty URL", with("webhook_url", json!("")), "webhook_url"),
        (
            "URL over 2000 bytes",
            with("webhook_url", json!(format!("https://example.com/{}", "a".repeat(2000)))),
            "webhook_url",
        ),
        ("timeout 0", with("timeout_secs", json!(0)), "timeout_secs"),
        ("timeout 301", with("timeout_secs", json!(301)), "timeout_secs"),
        ("timeout negative", with("timeout_secs", json!(-1)), ""),
        ("timeout fractional", with("timeout_secs", json!(1.5)), ""),
        ("timeout as text", with("timeout_secs", json!("30")), ""),
    ];
    for (case, body, expect) in cases {
        let (code, got) =
            t.request(Method::POST, "/v1/tools", Some(&t.master_key), Some(body)).await;
        assert_eq!(code, 400, "{case}: {got}");
        let message = got["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(message.contains(expect), "{case}: {message:?} lacks {expect:?}");
    }
    // A body over the endpoint's limit is refused from its length, unread.
    let huge = with("description", json!("d".repeat(130 * 1024)));
    let (code, got) = t.request(Method::POST, "/v1/tools", Some(&t.master_key), Some(huge)).await;
    assert_eq!(code, 413, "body over 128 KiB: {got}");
    let admin = t.client(&t.master_key);
    assert!(ids(&admin).await.is_empty(), "a refused request stored a tool");

    // The limits themselves are accepted.
    for (case, body) in [
        ("name of 64", with("name", json!("n".repeat(64)))),
        ("description of 16 KiB", {
            let mut b = good.clone();
            b["name"] = json!("long_description");
            b["description"] = json!("d".repeat(16 * 1024));
            RawBody::Json(b)
        }),
        ("timeouts 1 and 300", {
            let mut b = good.clone();
            b["name"] = json!("quick");
            b["timeout_secs"] = json!(1);
            RawBody::Json(b)
        }),
        ("timeout 300", {
            let mut b = good.clone();
            b["name"] = json!("patient");
            b["timeout_secs"] = json!(300);
            RawBody::Json(b)
        }),
        ("https URL", {
            let mut b = good.clone();
            b["name"] = json!("remote");
            b["webhook_url"] = json!("https://tools.example.com/lookup");
            RawBody::Json(b)
        }),
        ("draft-07 schema with local refs", {
            let mut b = good.clone();
            b["name"] = json!("draft7");
            b["input_schema"] = json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "definitions": {"id": {"type": "integer", "minimum": 1}},
                "properties": {"id": {"$ref": "#/definitions/id"}},
            });
            RawBody::Json(b)
        }),
    ] {
        let (code, got) =
            t.request(Method::POST, "/v1/tools", Some(&t.master_key), Some(body)).await;
        assert_eq!(code, 201, "{case}: {got}");
    }
    assert_eq!(ids(&admin).await.len(), 6);
    t.stop().await;
}

async fn lookups_by_name_for_turns(backend: Backend) {
    let Some(t) = TestServer::start(backend).await else {
        return;
    };
    let store = t.server().store();
    let new = |tenant: &str, name: &str| NewTool {
        tenant_id: tenant.to_string(),
        name: name.to_string(),
        description: format!("The {name} tool."),
        input_schema: r#"{"type":"object"}"#.to_string(),
        webhook_url: HOOK.to_string(),
        timeout_secs: 30,
    };
    // More tools than one lookup statement takes, so lookups span several.
    let names: Vec<String> = (0..70).map(|i| format!("t{i:02}")).collect();
    for name in names.iter().rev() {
        store.insert_tool(&new(&t.tenant_id, name)).await.unwrap();
    }
    let err = store.insert_tool(&new(&t.tenant_id, "t00")).await.unwrap_err();
    assert!(matches!(err, qlaud_server::error::Error::Conflict(_)), "{err}");
    let (other_tenant, _) = t.create_tenant("other").await;
    store.insert_tool(&new(&other_tenant, "theirs")).await.unwrap();

    // In the order asked, each once; unknown names and other tenants'
    // tools are left out.
    let asked = ["t05", "t01", "nope", "t05", "theirs", "t69"];
    let found = store.tools_by_name(&t.tenant_id, &asked).await.unwrap();
    let got: Vec<_> = found.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(got, ["t05", "t01", "t69"]);
    assert!(found.iter().all(|r| r.tenant_id == t.tenant_id && r.id.starts_with("tool_")));
    assert_eq!(found[0].description, "The t05 tool.");
    assert_eq!(found[0].timeout_secs, 30);
    let every: Vec<&str> = names.iter().rev().map(String::as_str).collect();
    let found = store.tools_by_name(&t.tenant_id, &every).await.unwrap();
    assert_eq!(found.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), every);
    assert!(store.tools_by_name(&t.tenant_id, &[]).await.unwrap().is_empty());
    assert!(store.tools_by_name(&other_tenant, &["t00"]).await.unwrap().is_empty());

    // Every tool of the tenant, by name.
    let all = store.all_tools(&t.tenant_id).await.unwrap();
    assert_eq!(all.iter().map(|r| r.name.clone()).collect::<Vec<_>>(), names);
    let theirs = store.all_tools(&other_tenant).await.unwrap();
    assert_eq!(theirs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["theirs"]);
    // A row reads back as the wire shape.
    let wire = qlaud_server::tools::to_wire(all[0].clone()).unwrap();
    assert_eq!(wire.input_schema, object(json!({"type": "object"})));
    t.stop().await;
}
