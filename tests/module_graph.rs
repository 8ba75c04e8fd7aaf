//! The crate's own module graph, read from `src/`: no import cycles between its modules, and
//! the miss path never reaches back into the hit path. A request bouncing between modules (A
//! calls B, which calls A's helpers) is how a path stops reading top to bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules and the modules each one names through `crate::` (tests and comments left out).
type Graph = BTreeMap<String, BTreeSet<String>>;

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let exports = reexports(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut graph = Graph::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let rel = path.strip_prefix(&src).unwrap();
        let module = rel.iter().next().unwrap().to_str().unwrap();
        let module = module.trim_end_matches(".rs").to_owned();
        if module == "lib" || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        let used = graph.entry(module.clone()).or_default();
        for name in named(&code) {
            let target = exports.get(&name).cloned().unwrap_or(name);
            if target != module {
                used.insert(target);
            }
        }
    }
    for (module, used) in &graph {
        for target in used {
            assert!(
                graph.contains_key(target),
                "{module} uses crate::{target}: not a module or re-export"
            );
        }
    }
    graph
}

/// The source without its `#[cfg(test)]` module and comments.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::` path, each item of a `crate::{..}` group included.
fn named(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for after in code.split("crate::").skip(1) {
        match after.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').expect("a closed group")];
                names.extend(group.split(',').map(ident).filter(|n| !n.is_empty()));
            }
            None => names.push(ident(after)),
        }
    }
    names
}

/// lib.rs's `pub use module::{Name, ..}`: each re-exported name and its module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in lib.lines().map(str::trim) {
        let Some(path) = line
            .strip_prefix("pub use ")
            .or_else(|| line.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let (module, items) = path.trim_end_matches(';').split_once("::").unwrap();
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = item.split(" as ").last().unwrap().trim();
            map.insert(name.to_owned(), module.to_owned());
        }
    }
    map
}

/// Every module reachable from `from`.
fn reach(graph: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(m) = todo.pop() {
        for next in &graph[&m] {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn no_module_imports_itself_through_another() {
    let graph = graph();
    assert!(graph.len() > 20, "read the modules: {:?}", graph.keys());
    for module in graph.keys() {
        if reach(&graph, module).contains(module) {
            let back: Vec<_> = graph[module]
                .iter()
                .filter(|m| reach(&graph, m).contains(module) || *m == module)
                .collect();
            panic!("import cycle: {module} -> {back:?} -> … -> {module}");
        }
    }
}

#[test]
fn the_miss_path_does_not_reach_back_into_the_hit_path() {
    let graph = graph();
    for miss in ["miss", "copy", "write", "coalesce"] {
        let reached = reach(&graph, miss);
        for hit in ["hit", "head", "plan", "service"] {
            assert!(!reached.contains(hit), "{miss} reaches {hit}: {reached:?}");
        }
    }
}

#[test]
fn the_reader_finds_crate_paths_in_groups_and_skips_comments_and_tests() {
    let code = code_of(
        "use crate::a::X;\nuse crate::{b::Y,\n    C};\n// crate::d\n/// [x](crate::e)\n\
         fn f() { crate::g::h() }\n#[cfg(test)]\nmod tests { use crate::i; }",
    );
    assert_eq!(named(&code), ["a", "b", "C", "g"]);
    let map = reexports("pub use m::{A, B as Bee};\npub(crate) use n::C;\nmod x;");
    assert_eq!(map["A"], "m");
    assert_eq!(map["Bee"], "m");
    assert_eq!(map["C"], "n");
}
