//! Keeps the module graph of `tickets/` free of cycles (issue 10).
//!
//! Reads the sources of `src/tickets/*.rs` and collects, for every module,
//! the modules it names: `use super::..`, `super::x::..` and
//! `crate::tickets::..` paths, a name re-exported by mod.rs counting as its
//! defining module, any other name of mod.rs as `mod` (the items mod.rs
//! defines itself: `JournalError`, `Result`, `now_ms`, `hex`, ..). Comments,
//! string literals and `#[cfg(test)]` modules are left out. Method calls
//! are not seen: `Journal::open` (store.rs) calling `recover_crashed`
//! (recovery.rs) is not an edge here.
//!
//! The test fails on a cycle and prints it with the whole graph. The
//! graph is written down in docs/architecture.md (the `tickets/` row).
//! Runs on the tree in `CARGO_MANIFEST_DIR` as cargo sets it at run time,
//! so the test binary can also check another checkout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name -> the modules it names (`mod` for mod.rs's own items).
type Graph = BTreeMap<String, BTreeSet<String>>;

/// `src` without comments and with every string or char literal emptied.
fn strip(src: &str) -> String {
    let s: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let at = |i: usize, p: &str| p.chars().enumerate().all(|(k, c)| s.get(i + k) == Some(&c));
    while i < s.len() {
        if at(i, "//") {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < s.len() {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if s[i] == 'r'
            && (i == 0 || !(s[i - 1].is_alphanumeric() || s[i - 1] == '_'))
            && (at(i + 1, "\"") || at(i + 1, "#"))
        {
            // Raw string r"..", r#".."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while s.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if s.get(j) != Some(&'"') {
                out.push(s[i]);
                i += 1;
                continue;
            }
            let end: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            j += 1;
            while j < s.len() && !at(j, &end) {
                j += 1;
            }
            out.push_str("\"\"");
            i = j + end.len();
        } else if s[i] == '"' {
            i += 1;
            while i < s.len() && s[i] != '"' {
                i += if s[i] == '\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i += 1;
        } else if s[i] == '\'' && s.get(i + 1) == Some(&'\\') {
            // '\n', '\x01', '\u{..}'
            i += 2;
            while i < s.len() && s[i] != '\'' {
                i += 1;
            }
            out.push_str("' '");
            i += 1;
        } else if s[i] == '\'' && s.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else {
            // Anything else, lifetimes included.
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier starting at byte `i` of `s`.
fn ident_at(s: &str, i: usize) -> &str {
    let end = s[i..]
        .find(|c: char| !is_ident(c))
        .map_or(s.len(), |n| i + n);
    &s[i..end]
}

/// Byte index of the brace closing the one at `open`.
fn closing(s: &str, open: usize) -> usize {
    let mut depth = 0;
    for (i, c) in s[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// Inline modules `mod name { .. }` of `s` (not nested ones): (start of
/// the attributes or `mod`, the body's open brace, its close brace, cfg(test)?).
fn inline_mods(s: &str) -> Vec<(usize, usize, usize, bool)> {
    let mut found = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        let c = s[i..].chars().next().expect("in bounds");
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            'm' if depth == 0
                && ident_at(s, i) == "mod"
                && (i == 0 || !s[..i].ends_with(is_ident)) =>
            {
                let rest = &s[i + 3..];
                let name_at = i + 3 + (rest.len() - rest.trim_start().len());
                let name = ident_at(s, name_at);
                let after = &s[name_at + name.len()..];
                if after.trim_start().starts_with('{') {
                    let open = name_at + name.len() + (after.len() - after.trim_start().len());
                    let close = closing(s, open);
                    let before = s[..i].trim_end();
                    let before = before.strip_suffix("pub(crate)").unwrap_or(before);
                    let before = before.strip_suffix("pub(super)").unwrap_or(before);
                    let before = before.strip_suffix("pub").unwrap_or(before).trim_end();
                    let test = before.ends_with("#[cfg(test)]");
                    let start = if test {
                        before.len() - "#[cfg(test)]".len()
                    } else {
                        i
                    };
                    found.push((start, open, close, test));
                    i = close + 1;
                    continue;
                }
            }
            _ => {}
        }
        i += c.len_utf8();
    }
    found
}

/// The first path segment of each top-level item of a `{a, b::c, d as e}` group.
fn group_heads(body: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in body.chars().chain(std::iter::once(',')) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                let t = cur.trim();
                if !t.is_empty() {
                    heads.push(ident_at(t, 0).to_string());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    heads
}

/// The names of `tickets` that code at inline-module depth `depth` names:
/// `super::` repeated `depth + 1` times, or `crate::tickets::`, then a
/// name or a `{..}` group.
fn tickets_names(code: &str, depth: usize) -> Vec<String> {
    let prefix = "super::".repeat(depth + 1);
    let mut names = Vec::new();
    for p in [prefix.as_str(), "crate::tickets::"] {
        let mut from = 0;
        while let Some(k) = code[from..].find(p) {
            let at = from + k;
            from = at + p.len();
            if at > 0 && code[..at].ends_with(|c: char| is_ident(c) || c == ':') {
                continue; // the tail of a longer path
            }
            let rest = &code[from..];
            if rest.starts_with("super::") {
                panic!(
                    "a path climbs out of tickets/: {}",
                    &code[at..at + 40.min(code.len() - at)]
                );
            }
            if rest.starts_with('{') {
                let close = closing(code, from);
                names.extend(group_heads(&code[from + 1..close]));
            } else {
                names.push(ident_at(code, from).to_string());
            }
        }
    }
    names
}

/// Collects the names a file's code (tests left out) gives to `tickets`.
fn file_names(code: &str, depth: usize, out: &mut Vec<String>) {
    let mods = inline_mods(code);
    let mut outer = String::new();
    let mut last = 0;
    for &(start, open, close, test) in &mods {
        outer.push_str(&code[last..start]);
        if !test {
            file_names(&code[open + 1..close], depth + 1, out);
        }
        last = close + 1;
    }
    outer.push_str(&code[last.min(code.len())..]);
    out.extend(tickets_names(&outer, depth));
}

/// The modules mod.rs declares (`#[cfg(test)]` ones left out) and its
/// re-exports: name -> defining module.
fn declarations(mod_rs: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut modules = BTreeSet::new();
    let mut reexports = BTreeMap::new();
    for stmt in mod_rs.split(';') {
        let t = stmt.trim();
        let (attrs, item) = match t.rfind(']') {
            Some(k) if t.starts_with("#[") => (&t[..=k], t[k + 1..].trim()),
            _ => ("", t),
        };
        let public = item.starts_with("pub ");
        let item = item.strip_prefix("pub ").unwrap_or(item).trim();
        if let Some(name) = item.strip_prefix("mod ") {
            if !attrs.contains("cfg(test)") && !name.contains('{') {
                modules.insert(name.trim().to_string());
            }
        } else if let Some(path) = item.strip_prefix("use ").filter(|_| public) {
            let Some((module, rest)) = path.split_once("::") else {
                continue;
            };
            let rest = rest.trim();
            let list = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .unwrap_or(rest);
            for it in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let name = it.rsplit(" as ").next().expect("one part").trim();
                reexports.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    (modules, reexports)
}

/// The module graph of the `tickets` sources in `dir`.
fn graph(dir: &Path) -> Graph {
    let read = |name: &str| {
        let p = dir.join(format!("{name}.rs"));
        strip(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
    };
    let mod_rs = read("mod");
    let (modules, reexports) = declarations(&mod_rs);
    let resolve = |name: &str| -> Option<String> {
        if modules.contains(name) {
            Some(name.to_string())
        } else if let Some(m) = reexports.get(name) {
            Some(m.clone())
        } else if name == "self" {
            None
        } else {
            Some("mod".to_string())
        }
    };
    let mut g = Graph::new();
    for m in &modules {
        let mut names = Vec::new();
        file_names(&read(m), 0, &mut names);
        let edges = names.iter().filter_map(|n| resolve(n)).filter(|t| t != m);
        g.insert(m.clone(), edges.collect());
    }
    // mod.rs's own code (not its `mod` and `pub use` lines): the
    // submodules and re-exported names it uses.
    let mut own = BTreeSet::new();
    let code: String = mod_rs
        .split_inclusive(';')
        .filter(|s| {
            let t = s.trim_start();
            let t = t.strip_prefix("pub ").unwrap_or(t);
            !(t.starts_with("mod ") || t.starts_with("use ") || t.starts_with("#[cfg(test)]"))
        })
        .collect();
    let mut i = 0;
    while i < code.len() {
        let c = code[i..].chars().next().expect("in bounds");
        if is_ident(c) && (i == 0 || !code[..i].ends_with(|c: char| is_ident(c) || c == ':')) {
            let word = ident_at(&code, i);
            if modules.contains(word) && code[i + word.len()..].starts_with("::") {
                own.insert(word.to_string());
            } else if let Some(m) = reexports.get(word) {
                own.insert(m.clone());
            }
            i += word.len();
        } else {
            i += c.len_utf8();
        }
    }
    g.insert("mod".to_string(), own);
    g
}

/// A cycle of `g` (its first module repeated at the end), if it has one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        m: &str,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(k) = path.iter().position(|p| p == m) {
            let mut cycle = path[k..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for t in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, t, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(g, m, &mut done, &mut Vec::new()))
}

/// Every module that lies on some cycle of `g`.
fn on_cycles(g: &Graph) -> Vec<String> {
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = g
            .get(from)
            .into_iter()
            .flatten()
            .map(|s| s.as_str())
            .collect();
        while let Some(m) = todo.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m) {
                todo.extend(g.get(m).into_iter().flatten().map(|s| s.as_str()));
            }
        }
        false
    };
    g.keys().filter(|m| reaches(m, m)).cloned().collect()
}

fn tickets_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("src/tickets")
}

fn show(g: &Graph) -> String {
    g.iter()
        .map(|(m, ts)| {
            format!(
                "{m} -> {}",
                ts.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_tickets_modules_form_no_cycle() {
    let g = graph(&tickets_dir());
    // The parser sees the edges it must (a graph without edges has no cycle).
    for (from, to) in [("store", "chain"), ("codes", "store"), ("chain", "rows")] {
        assert!(
            g.get(from).is_some_and(|ts| ts.contains(to)),
            "{from} -> {to} not found; graph:\n{}",
            show(&g)
        );
    }
    if let Some(c) = find_cycle(&g) {
        panic!(
            "tickets/ modules form a cycle: {}\nmodules on cycles: {}\ngraph:\n{}",
            c.join(" -> "),
            on_cycles(&g).join(", "),
            show(&g)
        );
    }
}

#[test]
fn the_parser_finds_paths_and_leaves_comments_strings_and_tests_out() {
    let code = strip(
        "use super::a::{self, X};\nuse super::{b, Journal as J};\n// super::c\n\
         /* super::c */ let s = \"super::c\"; let l: &'static str = r#\"super::c\"#;\n\
         fn f<'a>() { crate::tickets::d::g(); super::e::h(); let q = 'x'; }\n\
         mod inner { use super::super::f; use super::i; }\n\
         #[cfg(test)]\nmod tests { use super::super::c; }\n",
    );
    let mut names = Vec::new();
    file_names(&code, 0, &mut names);
    names.sort();
    assert_eq!(names, ["Journal", "a", "b", "d", "e", "f"]);
    let g: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(m, t)| (m.to_string(), [t.to_string()].into()))
        .collect();
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(on_cycles(&g), ["a", "b", "c"]);
    let dag: Graph = [("a", "b"), ("b", "c"), ("a", "c")]
        .into_iter()
        .map(|(m, t)| (m.to_string(), [t.to_string()].into()))
        .collect();
    assert_eq!(find_cycle(&dag), None);
}
