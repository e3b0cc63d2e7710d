//! The map in `ARCHITECTURE.md` is kept true: every module of the library crates has a row,
//! every `crate::` path a module uses names a module its row allows, the table has no cycle,
//! and no two modules (files) of a crate import each other round a cycle.
//!
//! The modules are found by following `mod` declarations from each crate's `lib.rs`; code
//! compiled only for tests (`#[cfg(test)]`, the `test-util` feature) is left out, as the
//! binary's `cli` is: it is declared by `main.rs`, not by the library.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The library crates the map covers, by folder.
const CRATES: [&str; 2] = ["edge-runtime", "sensor-drivers"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .to_path_buf()
}

/// `module -> modules it may import`, per crate folder, read from the tables that follow a
/// `### <crate folder>` heading.
fn read_map(text: &str) -> Result<BTreeMap<String, BTreeMap<String, BTreeSet<String>>>, String> {
    let mut maps: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        if let Some(heading) = line.strip_prefix("### ") {
            let name = heading.trim().trim_matches('`').to_string();
            current = CRATES.contains(&name.as_str()).then_some(name);
            if let Some(krate) = &current {
                maps.entry(krate.clone()).or_default();
            }
            continue;
        }
        let Some(krate) = &current else { continue };
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        if !line.trim_start().starts_with('|') || cells.len() < 3 {
            continue;
        }
        let Some(module) = ticked(cells[0]).into_iter().next() else {
            continue;
        };
        let allowed: BTreeSet<String> = ticked(cells[cells.len() - 1]).into_iter().collect();
        let table: &mut BTreeMap<String, BTreeSet<String>> = maps.entry(krate.clone()).or_default();
        if table.insert(module.clone(), allowed).is_some() {
            return Err(format!("line {}: `{module}` has two rows", n + 1));
        }
    }
    Ok(maps)
}

/// The `backticked` words of a table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Drops `//` comments, string and char literals' contents, and every item under a
/// `#[cfg(..)]` that mentions `test` (test modules, test-only imports, `test-util` fixtures).
fn library_code(source: &str) -> String {
    let mut out = String::new();
    let mut skip_item = false;
    let mut depth_at_skip: Option<i32> = None;
    let mut depth = 0i32;
    for raw in source.lines() {
        let line = strip_comment(raw);
        let trimmed = line.trim();
        if depth_at_skip.is_none() && trimmed.starts_with("#[cfg(") && trimmed.contains("test") {
            skip_item = true;
            continue;
        }
        if skip_item && depth_at_skip.is_none() {
            if trimmed.starts_with("#[") || trimmed.is_empty() {
                continue;
            }
            if !line.contains('{') && trimmed.ends_with(';') {
                skip_item = false;
                continue;
            }
            depth_at_skip = Some(depth);
        }
        for c in line.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
        }
        match depth_at_skip {
            Some(d) if depth <= d && line.contains('}') => {
                depth_at_skip = None;
                skip_item = false;
            }
            Some(_) => {}
            None => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

/// The line without its `//` comment and with literals emptied.
fn strip_comment(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            '\'' => {
                // A char literal ('x', '\n', '{') is emptied; a lifetime is kept.
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    for n in chars.by_ref() {
                        if n == '\'' {
                            break;
                        }
                    }
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// A module of a crate: its path below the crate root (`["engine", "model"]`) and its code.
struct Module {
    path: Vec<String>,
    code: String,
}

/// Follows the non-test `mod` declarations from `lib.rs`.
fn modules(src: &Path) -> Result<Vec<Module>, String> {
    let mut found = vec![];
    let mut stack = vec![(src.join("lib.rs"), vec![])];
    while let Some((file, path)) = stack.pop() {
        let source = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let code = library_code(&source);
        let dir = if path.is_empty() || file.ends_with("mod.rs") {
            file.parent().map(Path::to_path_buf)
        } else {
            file.with_extension("").into()
        }
        .ok_or_else(|| format!("{}: no folder", file.display()))?;
        for child in declared_modules(&code) {
            let flat = dir.join(format!("{child}.rs"));
            let nested = dir.join(&child).join("mod.rs");
            let child_file = if flat.exists() { flat } else { nested };
            if !child_file.exists() {
                return Err(format!("{}: `mod {child};` has no file", file.display()));
            }
            let mut child_path = path.clone();
            child_path.push(child);
            stack.push((child_file, child_path));
        }
        found.push(Module { path, code });
    }
    Ok(found)
}

/// Names of `mod x;` declarations (inline `mod x { .. }` blocks stay part of their file).
fn declared_modules(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub(super) "))
                .unwrap_or(l);
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

/// Every path the code names through `crate::`, `super::` or `self::`, made absolute
/// (segments below the crate root), with `use` groups (`crate::{a::b, c}`) expanded.
fn referenced_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut paths = vec![];
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let prev_ident = i > 0 && (bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let base: Option<(Vec<String>, usize)> = if prev_ident {
            None
        } else if rest.starts_with("crate::") {
            Some((vec![], 7))
        } else if rest.starts_with("super::") {
            Some((module[..module.len().saturating_sub(1)].to_vec(), 7))
        } else if rest.starts_with("self::") {
            Some((module.to_vec(), 6))
        } else {
            None
        };
        let Some((mut base, skip)) = base else {
            i += 1;
            continue;
        };
        i += skip;
        while bytes[i..].iter().collect::<String>().starts_with("super::") {
            base.pop();
            i += 7;
        }
        let (tail, used) = parse_tree(&bytes[i..]);
        i += used.max(1);
        for t in tail {
            let mut p = base.clone();
            p.extend(t);
            paths.push(p);
        }
    }
    paths
}

/// Parses `a::b::{c, d::e}` into `[[a, b, c], [a, b, d, e]]`, returning the characters used.
fn parse_tree(s: &[char]) -> (Vec<Vec<String>>, usize) {
    let mut i = 0;
    let mut prefix = vec![];
    loop {
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        if i < s.len() && s[i] == '{' {
            i += 1;
            let mut all = vec![];
            loop {
                let (sub, used) = parse_tree(&s[i..]);
                i += used;
                for t in sub {
                    let mut p = prefix.clone();
                    p.extend(t);
                    all.push(p);
                }
                while i < s.len() && s[i].is_whitespace() {
                    i += 1;
                }
                match s.get(i) {
                    Some(',') => i += 1,
                    Some('}') => {
                        i += 1;
                        break;
                    }
                    _ => break,
                }
                while i < s.len() && s[i].is_whitespace() {
                    i += 1;
                }
                if s.get(i) == Some(&'}') {
                    i += 1;
                    break;
                }
            }
            return (all, i);
        }
        let start = i;
        while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
            i += 1;
        }
        if start == i {
            return (vec![prefix], i);
        }
        prefix.push(s[start..i].iter().collect());
        if s[i..].starts_with(&[':', ':']) {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The longest module path that prefixes `path`.
fn owning_module<'a>(known: &'a BTreeSet<Vec<String>>, path: &[String]) -> Option<&'a Vec<String>> {
    (1..=path.len())
        .rev()
        .find_map(|n| known.get(&path[..n].to_vec()))
}

/// A cycle in `graph`, if there is one.
fn find_cycle<T: Ord + Clone>(graph: &BTreeMap<T, BTreeSet<T>>) -> Option<Vec<T>> {
    fn visit<T: Ord + Clone>(
        node: &T,
        graph: &BTreeMap<T, BTreeSet<T>>,
        state: &mut BTreeMap<T, bool>,
        stack: &mut Vec<T>,
    ) -> Option<Vec<T>> {
        match state.get(node) {
            Some(true) => {
                let at = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[at..].to_vec();
                cycle.push(node.clone());
                return Some(cycle);
            }
            Some(false) => return None,
            None => {}
        }
        state.insert(node.clone(), true);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(node.clone(), false);
        None
    }
    let mut state = BTreeMap::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut state, &mut vec![]))
}

/// One cycle through each group of nodes that reach each other.
fn cycles<T: Ord + Clone>(graph: &BTreeMap<T, BTreeSet<T>>) -> Vec<Vec<T>> {
    let mut graph = graph.clone();
    let mut found = vec![];
    while let Some(cycle) = find_cycle(&graph) {
        // Dropping the cycle's first edge lets the search go on to the next one.
        if let (Some(from), Some(to)) = (cycle.first(), cycle.get(1))
            && let Some(edges) = graph.get_mut(from)
        {
            edges.remove(to);
        }
        found.push(cycle);
    }
    found
}

/// What one crate breaks of its table, as readable lines.
fn check_crate(
    krate: &str,
    table: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<String>, String> {
    let src = repo().join(krate).join("src");
    let mods = modules(&src)?;
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let tops: BTreeSet<String> = mods
        .iter()
        .filter_map(|m| m.path.first().cloned())
        .collect();
    let mut problems = vec![];
    for top in &tops {
        if !table.contains_key(top) {
            problems.push(format!(
                "{krate}: module `{top}` has no row in ARCHITECTURE.md"
            ));
        }
    }
    for (row, allowed) in table {
        if !tops.contains(row) {
            problems.push(format!("{krate}: the row `{row}` names no module"));
        }
        for a in allowed {
            if !tops.contains(a) {
                problems.push(format!(
                    "{krate}: `{row}` may import `{a}`, which is no module"
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(table) {
        problems.push(format!(
            "{krate}: the table has a cycle: {}",
            cycle.join(" -> ")
        ));
    }
    let mut files: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for m in &mods {
        let Some(top) = m.path.first() else { continue };
        let allowed = table.get(top).cloned().unwrap_or_default();
        for p in referenced_paths(&m.path, &m.code) {
            let Some(target) = owning_module(&known, &p) else {
                continue;
            };
            let Some(target_top) = target.first() else {
                continue;
            };
            if target_top != top && !allowed.contains(target_top) {
                problems.push(format!(
                    "{krate}: `{}` uses `{}`, but `{top}` may not import `{target_top}`",
                    m.path.join("::"),
                    p.join("::")
                ));
            }
            let related = target.starts_with(&m.path) || m.path.starts_with(target);
            if !related {
                files
                    .entry(m.path.clone())
                    .or_default()
                    .insert(target.clone());
            }
        }
    }
    for cycle in cycles(&files) {
        let names: Vec<String> = cycle.iter().map(|p| p.join("::")).collect();
        problems.push(format!(
            "{krate}: modules import each other: {}",
            names.join(" -> ")
        ));
    }
    problems.sort();
    problems.dedup();
    Ok(problems)
}

#[test]
fn every_module_imports_only_what_the_architecture_map_allows() {
    let text =
        fs::read_to_string(repo().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md is readable");
    let maps = read_map(&text).expect("the map parses");
    let mut problems = vec![];
    for krate in CRATES {
        let table = maps
            .get(krate)
            .unwrap_or_else(|| panic!("ARCHITECTURE.md has no `### {krate}` table"));
        problems.extend(check_crate(krate, table).expect("the crate's modules are readable"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_sees_imports_through_groups_super_and_self() {
    let code = "use crate::{engine::{model, kernels::Isa}, governor};\nfn f() { super::super::eco::x(); self::y::z(); }";
    let module = vec!["serve".to_string(), "http".to_string(), "inner".to_string()];
    let paths = referenced_paths(&module, code);
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert!(joined.contains(&"engine::model".to_string()), "{joined:?}");
    assert!(
        joined.contains(&"engine::kernels::Isa".to_string()),
        "{joined:?}"
    );
    assert!(joined.contains(&"governor".to_string()), "{joined:?}");
    assert!(joined.contains(&"serve::eco::x".to_string()), "{joined:?}");
    assert!(
        joined.contains(&"serve::http::inner::y::z".to_string()),
        "{joined:?}"
    );
}

#[test]
fn test_only_code_and_comments_are_left_out_of_the_check() {
    let code = "use crate::a::X; // crate::b\n#[cfg(test)]\nuse crate::c::Y;\n#[cfg(test)]\nmod tests {\n    use crate::d::Z;\n    fn f() { let s = \"}\"; }\n}\nfn g() { crate::e::f(); }\n";
    let kept = library_code(code);
    let paths: Vec<String> = referenced_paths(&["m".to_string()], &kept)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(paths, ["a::X", "e::f"]);
}

#[test]
fn a_table_with_a_cycle_or_a_forbidden_import_is_reported() {
    let map = read_map(
        "### edge-runtime\n| module | owns | may import |\n|---|---|---|\n| `a` | x | `b` |\n| `b` | y | `a` |\n",
    )
    .expect("parses");
    let table = &map["edge-runtime"];
    assert!(find_cycle(table).is_some());
    let dag = read_map("### edge-runtime\n| `a` | x | `b` |\n| `b` | y | — |\n").expect("parses");
    assert!(find_cycle(&dag["edge-runtime"]).is_none());
}
