//! Stub drift: the committed `_qlaud.pyi` must describe exactly the classes,
//! methods and parameters the pyo3 bindings define (generated and
//! hand-written alike), read from the Rust source with `syn`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use syn::spanned::Spanned as _;

/// `class.method` → its Python parameter names, in order (`*` marks where
/// keyword-only ones start; `**name` collects the rest).
type Surface = BTreeMap<String, Vec<String>>;

/// Every difference between the bindings under `src` and the stub text.
pub fn drift(src: &Path, stub: &str) -> anyhow::Result<Vec<String>> {
    let rust = rust_surface(src)?;
    let python = stub_surface(stub);
    let mut problems = Vec::new();
    for (name, params) in &rust {
        match python.get(name) {
            None => problems.push(format!("{name} is bound in Rust but missing from the stub")),
            Some(p) if p != params => problems.push(format!(
                "{name}: the stub takes ({}) but the binding takes ({})",
                p.join(", "),
                params.join(", ")
            )),
            Some(_) => {}
        }
    }
    for name in python.keys().filter(|n| !rust.contains_key(*n)) {
        problems.push(format!("{name} is in the stub but not bound in Rust"));
    }
    Ok(problems)
}

fn rust_surface(src: &Path) -> anyhow::Result<Surface> {
    let mut surface = Surface::new();
    let mut entries: Vec<_> = std::fs::read_dir(src)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let file = syn::parse_file(&text).with_context(|| format!("parsing {}", path.display()))?;
        collect(&file.items, &mut surface)?;
    }
    Ok(surface)
}

fn has_attr(attrs: &[syn::Attribute], name: &str) -> bool {
    attrs.iter().any(|a| a.path().is_ident(name))
}

fn collect(items: &[syn::Item], surface: &mut Surface) -> anyhow::Result<()> {
    for item in items {
        match item {
            syn::Item::Mod(m) => {
                if let Some((_, items)) = &m.content {
                    collect(items, surface)?;
                }
            }
            syn::Item::Impl(imp) if has_attr(&imp.attrs, "pymethods") => {
                let syn::Type::Path(ty) = &*imp.self_ty else { continue };
                let class =
                    ty.path.segments.last().context("impl without a type")?.ident.to_string();
                for it in &imp.items {
                    let syn::ImplItem::Fn(f) = it else { continue };
                    let mut name = f.sig.ident.to_string();
                    if has_attr(&f.attrs, "new") {
                        name = "__new__".into();
                    }
                    let params = match signature(&f.attrs)? {
                        Some(p) => p,
                        None => f
                            .sig
                            .inputs
                            .iter()
                            .filter_map(|arg| match arg {
                                syn::FnArg::Typed(t) => Some(t),
                                syn::FnArg::Receiver(_) => None,
                            })
                            .filter(|t| {
                                let ty = quote_type(&t.ty);
                                !ty.starts_with("Python") && !ty.starts_with("PyRef")
                            })
                            .map(|t| match &*t.pat {
                                syn::Pat::Ident(i) => i.ident.to_string(),
                                other => format!("{:?}", other.span()),
                            })
                            .filter(|n| n != "slf")
                            .collect(),
                    };
                    surface.insert(format!("{class}.{name}"), params);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn quote_type(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => {
            p.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default()
        }
        syn::Type::Reference(r) => quote_type(&r.elem),
        _ => String::new(),
    }
}

/// The names in `#[pyo3(signature = (a, *, b=None, **extra))]`, if present.
fn signature(attrs: &[syn::Attribute]) -> anyhow::Result<Option<Vec<String>>> {
    for attr in attrs.iter().filter(|a| a.path().is_ident("pyo3")) {
        let text = match &attr.meta {
            syn::Meta::List(list) => list.tokens.to_string(),
            _ => continue,
        };
        let Some(rest) = text.trim().strip_prefix("signature") else { continue };
        let inner = rest.trim().trim_start_matches('=').trim();
        let inner = inner.strip_prefix('(').and_then(|s| s.strip_suffix(')')).unwrap_or(inner);
        return Ok(Some(param_names(inner)));
    }
    Ok(None)
}

/// Parameter names from a comma-separated list, annotations and defaults
/// dropped (commas inside brackets do not split).
fn param_names(list: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in list.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .iter()
        .map(|p| {
            let p = p.split([':', '=']).next().unwrap_or_default();
            p.split_whitespace().collect::<String>()
        })
        .filter(|p| !p.is_empty() && p != "self" && p != "cls" && p != "/")
        .collect()
}

fn stub_surface(stub: &str) -> Surface {
    let mut surface = Surface::new();
    let mut class = None;
    let mut lines = stub.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("class ") {
            class = Some(rest.split(['(', ':']).next().unwrap_or_default().trim().to_string());
            continue;
        }
        if !line.is_empty() && !line.starts_with(' ') && !line.starts_with('#') {
            class = None;
        }
        let trimmed = line.trim_start();
        let Some(def) = trimmed.strip_prefix("def ").or_else(|| trimmed.strip_prefix("async def "))
        else {
            continue;
        };
        let Some(class) = &class else { continue };
        let name = def.split('(').next().unwrap_or_default().to_string();
        // The parameters run to the `)` closing the list, maybe over lines.
        let mut text = def[name.len()..].to_string();
        while !text.contains(") ->") && !text.trim_end().ends_with("):") {
            match lines.next() {
                Some(l) => text.push_str(l),
                None => break,
            }
        }
        let inner = text.trim_start_matches('(');
        let end = inner.rfind(") ->").or_else(|| inner.rfind("):")).unwrap_or(inner.len());
        surface.insert(format!("{class}.{name}"), param_names(&inner[..end]));
    }
    surface
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_signatures_and_stub_defs() {
        assert_eq!(
            param_names("key_id, *, name=None, **extra"),
            ["key_id", "*", "name", "**extra"]
        );
        let stub = "class Client:\n    def get_key(\n        self,\n        key_id: str,\n    ) -> Key:\n        ...\n    async def close(self) -> None: ...\n";
        let s = stub_surface(stub);
        assert_eq!(s["Client.get_key"], ["key_id"]);
        assert_eq!(s["Client.close"], Vec::<String>::new());
    }
}
