//! The console's files, compiled into the binary.

pub const INDEX: &str = include_str!("assets/index.html");

const FILES: &[(&str, &str, &str)] = &[
    ("app.css", "text/css; charset=utf-8", include_str!("assets/app.css")),
    ("lib.js", "text/javascript; charset=utf-8", include_str!("assets/lib.js")),
    ("charts.js", "text/javascript; charset=utf-8", include_str!("assets/charts.js")),
    ("keys.js", "text/javascript; charset=utf-8", include_str!("assets/keys.js")),
    ("pages.js", "text/javascript; charset=utf-8", include_str!("assets/pages.js")),
    ("jobs.js", "text/javascript; charset=utf-8", include_str!("assets/jobs.js")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
    ("logo.svg", "image/svg+xml", include_str!("assets/logo.svg")),
];

/// A file's content type and body, by name.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    FILES.iter().find(|(n, _, _)| *n == name).map(|(_, t, body)| (*t, *body))
}
