//! The Python SDK's generated parts, from the spec:
//!
//! - `sdk-python/src/generated.rs`: one pyo3 method per operation on both
//!   `Client` and `AsyncClient`, each calling the Rust SDK;
//! - `sdk-python/python/qlaud/types.py`: a `TypedDict` or `Literal` per
//!   schema;
//! - `sdk-python/python/qlaud/_qlaud.pyi`: the hand-written stub head
//!   (`sdk-python/src/head.pyi`) with each operation's stub put in.
//!
//! [`stub_drift`] then compares the stub with the Rust bindings themselves,
//! so a hand-written method without a stub (or the reverse) fails `check`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use serde_json::Value;

pub const BINDINGS: &str = "sdk-python/src/generated.rs";
pub const TYPES: &str = "sdk-python/python/qlaud/types.py";
pub const STUB: &str = "sdk-python/python/qlaud/_qlaud.pyi";
pub const STUB_HEAD: &str = "sdk-python/src/head.pyi";

/// Operations whose request body passes through untouched (any provider
/// parameter) and which can answer with a stream.
const MODEL_OPS: &[&str] =
    &["create_message", "create_chat_completion", "create_response", "create_thread_message"];
/// The one operation whose body is raw bytes with a signature header.
const WEBHOOK_OP: &str = "stripe_webhook";

const PY_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];
const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else", "enum",
    "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move",
    "mut", "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true", "type",
    "use", "where", "while",
];

/// A name usable as both a Python and a Rust identifier.
fn ident(name: &str) -> String {
    if PY_KEYWORDS.contains(&name) || RUST_KEYWORDS.contains(&name) {
        format!("{name}_")
    } else {
        name.to_string()
    }
}

struct Param {
    name: String,
    schema: Value,
    required: bool,
    description: String,
}

enum Body {
    None,
    /// A JSON object whose properties become keyword arguments.
    Json {
        schema: String,
        fields: Vec<Param>,
        passthrough: bool,
    },
    Bytes,
}

struct Op {
    id: String,
    method: String,
    path: String,
    doc: String,
    path_params: Vec<Param>,
    query_params: Vec<Param>,
    body: Body,
    /// Python type of the answer (`None` for 204).
    returns: String,
    paginated: bool,
}

impl Op {
    fn model(&self) -> bool {
        MODEL_OPS.contains(&self.id.as_str())
    }
}

fn schema_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

/// The `$ref` a schema names directly or through a one-element `allOf`.
fn reference(schema: &Value) -> Option<&str> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return Some(schema_name(r));
    }
    match schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        Some([one]) => reference(one),
        _ => None,
    }
}

/// The Python type of a schema.
fn py_type(schema: &Value) -> String {
    let base = if let Some(name) = reference(schema) {
        name.to_string()
    } else if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        literal(variants).unwrap_or_else(|| "Any".into())
    } else {
        match schema.get("type").and_then(Value::as_str) {
            Some("string") if schema.get("format").and_then(Value::as_str) == Some("binary") => {
                "bytes".into()
            }
            Some("string") => match schema.get("enum").and_then(Value::as_array) {
                Some(values) => literal(&[Value::Object(
                    [("enum".to_string(), Value::Array(values.clone()))].into_iter().collect(),
                )])
                .unwrap_or_else(|| "str".into()),
                None => "str".into(),
            },
            Some("integer") => "int".into(),
            Some("number") => "float".into(),
            Some("boolean") => "bool".into(),
            Some("array") => {
                format!(
                    "list[{}]",
                    schema.get("items").map(py_type).unwrap_or_else(|| "Any".into())
                )
            }
            Some("object") => match schema.get("additionalProperties") {
                Some(v) if v.is_object() => format!("dict[str, {}]", py_type(v)),
                _ => "dict[str, Any]".into(),
            },
            _ => "Any".into(),
        }
    };
    if schema.get("nullable").and_then(Value::as_bool) == Some(true) && base != "Any" {
        format!("{base} | None")
    } else {
        base
    }
}

/// `Literal["a", "b"]` for a `oneOf` of string enums.
fn literal(variants: &[Value]) -> Option<String> {
    let mut values = Vec::new();
    for v in variants {
        for e in v.get("enum")?.as_array()? {
            values.push(format!("{:?}", e.as_str()?));
        }
    }
    Some(format!("Literal[{}]", values.join(", ")))
}

fn description(v: &Value) -> String {
    v.get("description").and_then(Value::as_str).unwrap_or_default().trim().to_string()
}

fn operations(spec: &Value) -> anyhow::Result<Vec<Op>> {
    let schemas = &spec["components"]["schemas"];
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().context("spec has no paths")? {
        for (method, op) in item.as_object().context("path item is not an object")? {
            let id = op["operationId"].as_str().context("operation without an id")?.to_string();
            // Hand-written in sdk-python/src/media.rs, with stubs in the head.
            if qlaud_api::MEDIA_OPERATIONS.contains(&id.as_str()) {
                continue;
            }
            let summary = op.get("summary").and_then(Value::as_str).unwrap_or_default();
            let doc = format!("{summary}\n\n{}", description(op)).trim().to_string();
            let mut path_params = Vec::new();
            let mut query_params = Vec::new();
            for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
                let param = Param {
                    name: p["name"].as_str().context("parameter without a name")?.to_string(),
                    schema: p["schema"].clone(),
                    required: p.get("required").and_then(Value::as_bool) == Some(true),
                    description: description(p),
                };
                match p["in"].as_str() {
                    Some("path") => path_params.push(param),
                    Some("query") => query_params.push(param),
                    other => bail!("{id}: parameters in {other:?} are not supported"),
                }
            }
            let content = &op["requestBody"]["content"];
            let body = if let Some(json) = content.get("application/json") {
                let name = reference(&json["schema"])
                    .with_context(|| format!("{id}: the body is not a named schema"))?;
                let schema = &schemas[name];
                let required: BTreeSet<&str> = schema["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut fields = Vec::new();
                for (field, s) in schema["properties"].as_object().into_iter().flatten() {
                    fields.push(Param {
                        name: field.clone(),
                        schema: s.clone(),
                        required: required.contains(field.as_str()),
                        description: description(s),
                    });
                }
                // Required fields first, as Python demands.
                fields.sort_by_key(|f| !f.required);
                let passthrough = schema.get("additionalProperties") == Some(&Value::Bool(true));
                Body::Json { schema: name.to_string(), fields, passthrough }
            } else if content.get("application/octet-stream").is_some() {
                Body::Bytes
            } else {
                Body::None
            };
            let responses = &op["responses"];
            let ok = ["200", "201", "202"].iter().find_map(|c| responses.get(*c));
            let returns = match ok {
                Some(r) => py_type(&r["content"]["application/json"]["schema"]),
                None => "None".into(),
            };
            ops.push(Op {
                id,
                method: method.to_uppercase(),
                path: path.clone(),
                doc,
                path_params,
                query_params,
                body,
                returns,
                paginated: op.get("x-dropshot-pagination").is_some(),
            });
        }
    }
    ops.sort_by(|a, b| a.id.cmp(&b.id));
    if !ops.iter().any(|o| o.id == WEBHOOK_OP)
        || MODEL_OPS.iter().any(|m| !ops.iter().any(|o| o.id == *m))
    {
        bail!("the Python generator's special operations are missing from the spec");
    }
    Ok(ops)
}

// ---------------------------------------------------------------- Rust ----

/// The Rust type a path or query parameter arrives as from Python.
fn rust_param_type(schema: &Value) -> &'static str {
    match schema.get("type").and_then(Value::as_str) {
        Some("boolean") => "bool",
        Some("integer") => match schema.get("format").and_then(Value::as_str) {
            Some("uint32") => "u32",
            Some("uint64") => "u64",
            _ => "i64",
        },
        _ => "String",
    }
}

fn rust_doc(out: &mut String, indent: &str, doc: &str) {
    for line in doc.lines() {
        if line.is_empty() {
            let _ = writeln!(out, "{indent}///");
        } else {
            let _ = writeln!(out, "{indent}/// {line}");
        }
    }
}

/// The pyo3 signature, the Rust parameters and the call of the shared
/// async function, for one operation.
struct RustShape {
    signature: Vec<String>,
    params: Vec<String>,
    prepare: String,
    call_args: Vec<String>,
}

fn rust_shape(op: &Op) -> RustShape {
    let mut signature = Vec::new();
    let mut params = Vec::new();
    let mut prepare = String::new();
    let mut call_args = Vec::new();
    for p in &op.path_params {
        let n = ident(&p.name);
        signature.push(n.clone());
        params.push(format!("{n}: String"));
        call_args.push(n);
    }
    if matches!(op.body, Body::Bytes) {
        signature.push("payload".into());
        params.push("payload: Vec<u8>".into());
        call_args.push("payload".into());
    }
    signature.push("*".into());
    if matches!(op.body, Body::Bytes) {
        signature.push("signature".into());
        params.push("signature: String".into());
        call_args.push("signature".into());
    }
    for p in &op.query_params {
        let n = ident(&p.name);
        let t = rust_param_type(&p.schema);
        if p.required {
            signature.push(n.clone());
            params.push(format!("{n}: {t}"));
        } else {
            signature.push(format!("{n}=None"));
            params.push(format!("{n}: Option<{t}>"));
        }
        call_args.push(n);
    }
    if let Body::Json { fields, passthrough, .. } = &op.body {
        // The request body's own name, unless a field takes it (a job's
        // `body`).
        let var = if fields.iter().any(|f| f.name == "body") { "request_body" } else { "body" };
        let _ = writeln!(prepare, "        let mut {var} = serde_json::Map::new();");
        for f in fields {
            let n = ident(&f.name);
            if op.model() && f.name == "stream" {
                signature.push("stream=false".into());
                params.push("stream: bool".into());
                continue;
            }
            if f.required {
                signature.push(n.clone());
                params.push(format!("{n}: &Bound<'py, PyAny>"));
                let _ = writeln!(
                    prepare,
                    "        crate::convert::put(&mut {var}, {:?}, Some({n}))?;",
                    f.name
                );
            } else {
                signature.push(format!("{n}=None"));
                params.push(format!("{n}: Option<&Bound<'py, PyAny>>"));
                let _ = writeln!(
                    prepare,
                    "        crate::convert::put(&mut {var}, {:?}, {n})?;",
                    f.name
                );
            }
        }
        if *passthrough {
            signature.push("**extra".into());
            params.push("extra: Option<&Bound<'py, PyDict>>".into());
            let _ = writeln!(prepare, "        crate::convert::put_all(&mut {var}, extra)?;");
        }
        call_args.push(var.into());
        if op.model() {
            call_args.push("stream".into());
        }
    }
    if signature.last().map(String::as_str) == Some("*") {
        signature.pop();
    }
    RustShape { signature, params, prepare, call_args }
}

fn rust_bindings(ops: &[Op]) -> String {
    let mut out = String::from(
        "// @generated by `cargo xtask generate` from openapi/qlaud.json.\n\
         // Do not edit by hand: change the API trait and regenerate.\n\
         //\n\
         // One method per operation on `Client` (blocking, the GIL released)\n\
         // and `AsyncClient` (awaitable), both running the same call on the\n\
         // Rust SDK.\n\n\
         use pyo3::prelude::*;\n\
         use pyo3::types::PyDict;\n\n\
         use crate::client::{AsyncClient, Client};\n\
         use crate::convert::{CallError, Output};\n\n",
    );
    for (class, is_async) in [("Client", false), ("AsyncClient", true)] {
        let _ = writeln!(out, "#[pymethods]\nimpl {class} {{");
        for op in ops {
            let shape = rust_shape(op);
            let doc = format!("{}\n\n`{} {}`", op.doc, op.method, op.path);
            rust_doc(&mut out, "    ", &doc);
            let _ = writeln!(out, "    #[pyo3(signature = ({}))]", shape.signature.join(", "));
            let ret = if is_async { "Bound<'py, PyAny>" } else { "Py<PyAny>" };
            let _ = writeln!(
                out,
                "    fn {}<'py>(&self, py: Python<'py>, {}) -> PyResult<{ret}> {{",
                op.id,
                shape.params.join(", ")
            );
            out.push_str(&shape.prepare);
            let _ = writeln!(out, "        let sdk = self.core.sdk();");
            let runner = if is_async { "spawn" } else { "call" };
            let _ = writeln!(
                out,
                "        self.core.{runner}(py, ops::{}(sdk, {}))",
                op.id,
                shape.call_args.join(", ")
            );
            let _ = writeln!(out, "    }}\n");
            if op.paginated {
                pager_method(&mut out, op, is_async);
            }
        }
        let _ = writeln!(out, "}}\n");
    }
    out.push_str("/// The calls themselves, shared by both clients.\nmod ops {\n");
    out.push_str("    use super::*;\n    use qlaud::types;\n\n");
    for op in ops {
        let shape = rust_shape(op);
        let mut params = vec!["sdk: crate::client::Sdk".to_string()];
        params.extend(
            shape
                .params
                .iter()
                .filter(|p| !p.contains("Bound<") && !p.starts_with("stream:"))
                .cloned(),
        );
        if matches!(op.body, Body::Json { .. }) {
            params.push("body: serde_json::Map<String, serde_json::Value>".into());
        }
        if op.model() {
            params.push("stream: bool".into());
        }
        let _ = writeln!(
            out,
            "    pub(super) async fn {}({}) -> Result<Output, CallError> {{",
            op.id,
            params.join(", ")
        );
        if op.model() {
            // Path parameters (a thread's id) come before the body.
            let path: String =
                op.path_params.iter().map(|p| format!("&{}, ", ident(&p.name))).collect();
            let _ = writeln!(
                out,
                "        let body = serde_json::Value::Object(body);\n        \
                 if stream {{\n            \
                 let events = sdk.{0}_stream({1}body).await.map_err(CallError::raw)?;\n            \
                 Ok(Output::Stream(events))\n        \
                 }} else {{\n            \
                 sdk.{0}_json({1}body).await.map(Output::Json).map_err(CallError::raw)\n        \
                 }}\n    }}\n",
                op.id, path
            );
            continue;
        }
        if matches!(op.body, Body::Bytes) {
            let tenant = ident(&op.path_params[0].name);
            let _ = writeln!(
                out,
                "        sdk.stripe_webhook_signed(&{tenant}, payload, &signature)\n            \
                 .await\n            .map(Output::Json)\n            .map_err(CallError::raw)\n    }}\n"
            );
            continue;
        }
        // The call goes out as JSON through the Rust SDK's client (its
        // retries, auth and errors); arguments are first checked against the
        // SDK's generated types. The answer is returned exactly as sent:
        // re-serialising the typed answer would drop its `null` fields.
        let mutable = if op.query_params.is_empty() { "" } else { "mut " };
        let _ = writeln!(out, "        let {mutable}query: Vec<(&str, String)> = Vec::new();");
        for p in &op.query_params {
            let n = ident(&p.name);
            let check = match reference(&p.schema) {
                Some(name) => format!("crate::convert::parse::<types::{name}>(v.clone())?; "),
                None => String::new(),
            };
            if p.required {
                let _ = writeln!(
                    out,
                    "        {{ let v = {n}; {check}query.push(({:?}, v.to_string())); }}",
                    p.name
                );
            } else {
                let _ = writeln!(
                    out,
                    "        if let Some(v) = {n} {{ {check}query.push(({:?}, v.to_string())); }}",
                    p.name
                );
            }
        }
        let mut template = op.path.clone();
        let mut args = Vec::new();
        for p in &op.path_params {
            template = template.replace(&format!("{{{}}}", p.name), "{}");
            args.push(format!(", crate::convert::segment(&{})", ident(&p.name)));
        }
        if args.is_empty() {
            let _ = writeln!(out, "        let path = String::from({template:?});");
        } else {
            let _ = writeln!(out, "        let path = format!({template:?}{});", args.concat());
        }
        let body = match &op.body {
            Body::Json { schema, .. } => {
                let _ = writeln!(
                    out,
                    "        let body = crate::convert::checked::<types::{schema}>(body)?;"
                );
                "Some(body)"
            }
            _ => "None",
        };
        let _ = writeln!(
            out,
            "        sdk.request_json(reqwest::Method::{}, &path, &query, {body})\n            \
             .await\n            .map(Output::Json)\n            .map_err(CallError::raw)\n    }}\n",
            op.method
        );
    }
    out.push_str("}\n");
    out
}

/// `iter_<items>` for a paginated `list_<items>`: a pager that fetches page
/// after page with the same arguments.
fn pager_method(out: &mut String, op: &Op, is_async: bool) {
    let shape = rust_shape(op);
    let keep = |p: &String| !p.starts_with("page_token");
    let signature: Vec<&String> = shape.signature.iter().filter(|p| keep(p)).collect();
    let params: Vec<&String> = shape.params.iter().filter(|p| keep(p)).collect();
    let name = op.id.replacen("list_", "iter_", 1);
    rust_doc(out, "    ", &format!("Every item of `{}`, a page at a time.", op.id));
    let _ = writeln!(
        out,
        "    #[pyo3(signature = ({}))]",
        signature.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    );
    let class = if is_async { "AsyncPager" } else { "Pager" };
    let _ = writeln!(
        out,
        "    fn {name}(&self, {}) -> crate::pager::{class} {{",
        params.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    );
    let args: Vec<String> = shape
        .call_args
        .iter()
        .map(|a| if a == "page_token" { "page_token".to_string() } else { format!("{a}.clone()") })
        .collect();
    let _ = writeln!(
        out,
        "        crate::pager::{class}::new(self.core.clone(), move |sdk, page_token| {{\n            \
         Box::pin(ops::{}(sdk, {}))\n        }})\n    }}\n",
        op.id,
        args.join(", ")
    );
}

// -------------------------------------------------------------- Python ----

fn py_doc(out: &mut String, indent: &str, doc: &str) {
    let doc = doc.replace('\\', "\\\\").replace("\"\"\"", "\\\"\\\"\\\"");
    let _ = writeln!(out, "{indent}\"\"\"{}", doc.lines().next().unwrap_or_default());
    for line in doc.lines().skip(1) {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{indent}{line}");
        }
    }
    let _ = writeln!(out, "{indent}\"\"\"");
}

/// The Python parameter list and the answer's type, for one operation.
fn py_signature(op: &Op, stream: Option<bool>) -> (Vec<String>, String) {
    let mut params = vec!["self".to_string()];
    for p in &op.path_params {
        params.push(format!("{}: {}", ident(&p.name), py_type(&p.schema)));
    }
    if matches!(op.body, Body::Bytes) {
        params.push("payload: bytes".into());
    }
    params.push("*".into());
    if matches!(op.body, Body::Bytes) {
        params.push("signature: str".into());
    }
    for p in &op.query_params {
        let t = py_type(&p.schema);
        if p.required {
            params.push(format!("{}: {t}", ident(&p.name)));
        } else {
            let t = if t.ends_with("| None") { t } else { format!("{t} | None") };
            params.push(format!("{}: {t} = None", ident(&p.name)));
        }
    }
    let mut returns = op.returns.clone();
    if let Body::Json { fields, passthrough, .. } = &op.body {
        for f in fields {
            let mut t = py_type(&f.schema);
            // Money may also be given exactly, as a `Decimal`.
            if reference(&f.schema) == Some("Usd") {
                t = t.replacen("Usd", "Usd | Decimal", 1);
            }
            if op.model() && f.name == "stream" {
                match stream {
                    Some(true) => params.push("stream: Literal[True]".into()),
                    Some(false) => params.push("stream: Literal[False] = False".into()),
                    None => params.push("stream: bool = False".into()),
                }
                continue;
            }
            if f.required {
                params.push(format!("{}: {t}", ident(&f.name)));
            } else {
                let t = if t.ends_with("| None") || t == "Any" { t } else { format!("{t} | None") };
                params.push(format!("{}: {t} = None", ident(&f.name)));
            }
        }
        if *passthrough {
            params.push("**extra: Any".into());
        }
    }
    match stream {
        Some(true) => returns = "Stream".into(),
        // A `stream=` known only at run time.
        None if op.model() => returns = format!("{returns} | Stream"),
        _ => {}
    }
    if params.last().map(String::as_str) == Some("*") {
        params.pop();
    }
    (params, returns)
}

fn py_param_docs(op: &Op) -> String {
    let mut lines = Vec::new();
    let mut add = |name: &str, d: &str| {
        if !d.is_empty() {
            lines.push(format!("    {}: {}", ident(name), d.replace('\n', " ")));
        }
    };
    for p in op.path_params.iter().chain(&op.query_params) {
        add(&p.name, &p.description);
    }
    if matches!(op.body, Body::Bytes) {
        add("payload", "The webhook's body, byte for byte as Stripe sent it.");
        add("signature", "Its `Stripe-Signature` header.");
    }
    if let Body::Json { fields, passthrough, .. } = &op.body {
        for f in fields {
            add(&f.name, &f.description);
        }
        if *passthrough {
            add(
                "extra",
                "Any other field of the provider's API (tools, temperature, …), sent as is.",
            );
        }
    }
    if lines.is_empty() { String::new() } else { format!("\n\nArgs:\n{}", lines.join("\n")) }
}

fn py_methods(ops: &[Op], is_async: bool) -> String {
    let mut out = String::new();
    for op in ops {
        let doc = format!("{}\n\n`{} {}`{}", op.doc, op.method, op.path, py_param_docs(op));
        let variants: &[Option<bool>] =
            if op.model() { &[Some(false), Some(true), None] } else { &[None] };
        for variant in variants {
            let (params, mut returns) = py_signature(op, *variant);
            if is_async && op.model() {
                returns = returns.replace("Stream", "AsyncStream");
            }
            if op.model() {
                out.push_str("    @overload\n");
            }
            let prefix = if is_async { "async def" } else { "def" };
            let _ = writeln!(
                out,
                "    {prefix} {}(\n        {},\n    ) -> {returns}:",
                op.id,
                params.join(",\n        ")
            );
            py_doc(&mut out, "        ", &doc);
        }
        if op.paginated {
            let item = op.returns.trim_end_matches("ResultsPage").to_string();
            let (mut params, _) = py_signature(op, None);
            params.retain(|p| !p.starts_with("page_token"));
            let name = op.id.replacen("list_", "iter_", 1);
            let (prefix, it) =
                if is_async { ("def", "AsyncIterator") } else { ("def", "Iterator") };
            let _ = writeln!(
                out,
                "    {prefix} {name}(\n        {},\n    ) -> {it}[{item}]:",
                params.join(",\n        ")
            );
            py_doc(
                &mut out,
                "        ",
                &format!(
                    "Every item of `{}`, fetching the next page as the last one runs out.",
                    op.id
                ),
            );
        }
    }
    out
}

fn py_types(spec: &Value) -> anyhow::Result<String> {
    let mut out = String::from(
        "# @generated by `cargo xtask generate` from openapi/qlaud.json.\n\
         # Do not edit by hand: change the API trait and regenerate.\n\
         \"\"\"The shapes qlaud's API sends and takes, as `TypedDict`s and `Literal`s.\n\n\
         Answers are plain dicts and lists; these types let mypy and editors check\n\
         how they are used.\n\"\"\"\n\n\
         from __future__ import annotations\n\n\
         import sys\n\
         from typing import Any, Literal, TypedDict\n\n\
         if sys.version_info >= (3, 11):\n    from typing import NotRequired\n\
         else:\n    from typing_extensions import NotRequired\n\n\
         __all__ = [\n",
    );
    let schemas = spec["components"]["schemas"].as_object().context("no schemas")?;
    for name in schemas.keys() {
        let _ = writeln!(out, "    {name:?},");
    }
    out.push_str("]\n");
    // Aliases first (Literal, float), so the TypedDicts below may use them.
    let (aliases, dicts): (Vec<_>, Vec<_>) =
        schemas.iter().partition(|(_, s)| s.get("properties").is_none());
    for (name, schema) in aliases {
        let _ = writeln!(out, "\n{name} = {}", py_type(schema));
        let d = description(schema);
        if !d.is_empty() {
            let _ = writeln!(out, "\"\"\"{}\"\"\"", d.replace("\"\"\"", "'''"));
        }
    }
    for (name, schema) in dicts {
        let required: BTreeSet<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let fields: BTreeMap<&String, String> = schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(f, s)| {
                let t = py_type(s);
                let t = if required.contains(f.as_str()) { t } else { format!("NotRequired[{t}]") };
                (f, t)
            })
            .collect();
        if fields.keys().any(|f| PY_KEYWORDS.contains(&f.as_str())) {
            // A key such as `from` cannot be a class attribute.
            let _ = writeln!(out, "\n{name} = TypedDict(\n    {name:?},\n    {{");
            for (f, t) in &fields {
                let _ = writeln!(out, "        {f:?}: {t:?},");
            }
            out.push_str("    },\n)\n");
            let d = description(schema);
            if !d.is_empty() {
                let _ = writeln!(out, "\"\"\"{}\"\"\"", d.replace("\"\"\"", "'''"));
            }
            continue;
        }
        let _ = writeln!(out, "\n\nclass {name}(TypedDict):");
        let d = description(schema);
        if !d.is_empty() {
            py_doc(&mut out, "    ", &d);
            out.push('\n');
        }
        for (f, t) in &fields {
            let _ = writeln!(out, "    {f}: {t}");
            let fd = description(&schema["properties"][f.as_str()]);
            if !fd.is_empty() {
                let _ = writeln!(
                    out,
                    "    \"\"\"{}\"\"\"",
                    fd.replace("\"\"\"", "'''").replace('\n', " ")
                );
            }
        }
    }
    Ok(out)
}

/// Every generated Python SDK file with its contents.
pub fn expected_files(
    root: &std::path::Path,
    spec: &Value,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let ops = operations(spec)?;
    let head = std::fs::read_to_string(root.join(STUB_HEAD))
        .with_context(|| format!("reading {STUB_HEAD}"))?;
    let mut stub = String::from(
        "# @generated by `cargo xtask generate` from sdk-python/src/head.pyi and\n\
         # openapi/qlaud.json. Do not edit by hand.\n",
    );
    for line in head.lines() {
        match line.trim() {
            "# <operations: Client>" => stub.push_str(&py_methods(&ops, false)),
            "# <operations: AsyncClient>" => stub.push_str(&py_methods(&ops, true)),
            // Named one by one: a stub re-exports what `*` imports.
            "# <imports: qlaud.types>" => {
                let names = spec["components"]["schemas"].as_object().context("no schemas")?;
                stub.push_str("from qlaud.types import (\n");
                for name in names.keys() {
                    let _ = writeln!(stub, "    {name},");
                }
                stub.push_str(")\n");
            }
            _ => {
                stub.push_str(line);
                stub.push('\n');
            }
        }
    }
    Ok(vec![(BINDINGS, rust_bindings(&ops)), (TYPES, py_types(spec)?), (STUB, stub)])
}

/// The operation ids of the spec (for tests).
#[cfg(test)]
pub fn operation_ids(spec: &Value) -> Vec<String> {
    // Every operation, the hand-written media ones included.
    let mut ids: Vec<String> = spec["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.values())
        .filter_map(Value::as_object)
        .flat_map(|ops| ops.values())
        .filter_map(|op| op["operationId"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}
