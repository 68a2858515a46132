//! Lists every file under web/ (the browser page and the vendored noVNC)
//! for `src/web/mod.rs`, which bundles them with include_bytes!: the
//! binary serves them without the network or a file system.

use std::fmt::Write;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "text/plain; charset=utf-8",
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("web");
    println!("cargo:rerun-if-changed=web");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut src = String::from("pub static ASSETS: &[Asset] = &[\n");
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        // web/novnc/core/rfb.js is served as /core/rfb.js, web/index.html as /index.html.
        let url = format!("/{}", rel.strip_prefix("novnc/").unwrap_or(&rel));
        writeln!(
            src,
            "    Asset {{ path: {url:?}, content_type: {:?}, body: include_bytes!({:?}) }},",
            content_type(&url),
            f.display().to_string()
        )
        .unwrap();
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("web_assets.rs");
    std::fs::write(out, src).unwrap();
}
