//! No import circles: within each crate of the workspace, no module depends on a module that depends
//! back on it, directly or through others.
//!
//! Each crate root (`shared`, `edge`, `origin`, `host`, `xtask` and `bench`, library and binary, and this crate's
//! library) is parsed with `syn`, following its `mod` declarations to every file. A module depends on
//! another when its code names it by a path that starts with `crate::` or `super::` (in a `use`, a type,
//! an expression, or a macro's tokens; `super::` is resolved, re-exports in the crate root are followed
//! to their module). Only siblings are compared, at every level: `cache` and `config` under the root,
//! `http::users` and `http::admin` under `http`; a module using its parent or its own children is the
//! normal shape of a tree. Test-only code (`#[cfg(test)]`) is left out: a test may reach anywhere.
//!
//! The graph of each level is split into strongly connected components; every component of two or more
//! modules is a circle. The test fails on a circle that is not in [`KNOWN_CIRCLES`], naming its modules
//! and the imports that close it, and on a listed circle that is gone, so that the list only shrinks.
//! The edge's layering is checked on the same graph: the read plan and the value types under it name none
//! of the modules that do I/O or carry the plan out ([`EDGE_PURE`], [`EDGE_ABOVE`]).
//!
//! No servers: it reads source files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Circles tolerated for now: `(crate root, parent module (`""`: the crate root), the modules of the
/// circle in alphabetical order)`. Empty since #16 removed the last one; a new circle fails the test
/// rather than being listed here.
const KNOWN_CIRCLES: &[(&str, &str, &[&str])] = &[];

/// The crate roots checked, relative to the workspace root.
const ROOTS: &[&str] = &[
    "shared/src/lib.rs",
    "edge/src/lib.rs",
    "origin/src/lib.rs",
    "origin/src/main.rs",
    "host/src/lib.rs",
    "host/src/main.rs",
    "xtask/src/lib.rs",
    "xtask/src/main.rs",
    "bench/src/lib.rs",
    "bench/src/main.rs",
    "tests/src/lib.rs",
];

/// The edge's modules below the I/O: the read plan and the values it takes and gives.
const EDGE_PURE: &[&str] = &["plan", "copy", "outcome", "feed_tag"];

/// The edge's modules that do I/O (the tiers, Redis, the origin, the feed, the key-value store, the
/// clocks) or carry the plan out: none of [`EDGE_PURE`] may name one of them (test code aside).
const EDGE_ABOVE: &[&str] = &[
    "l1",
    "l2",
    "forward",
    "process_tier",
    "feed",
    "read",
    "handler",
    "flight",
    "keys",
    "tokens",
    "clock",
    "budget",
    "backoff",
];

#[test]
fn the_edge_plan_and_its_values_sit_below_the_io_modules() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let read = |path: &Path| std::fs::read_to_string(workspace.join(path)).ok();
    let graph = ModuleGraph::of_crate(Path::new("edge/src/lib.rs"), &read)
        .unwrap_or_else(|e| panic!("cannot read the edge crate: {e}"));
    for module in EDGE_PURE.iter().chain(EDGE_ABOVE) {
        assert!(
            graph.modules.contains(&vec![module.to_string()]),
            "`{module}` is not a module of the edge: update the lists"
        );
    }
    let wrong: Vec<String> = graph
        .edges
        .iter()
        .filter(|((parent, from, to), _)| {
            parent.is_empty()
                && EDGE_PURE.contains(&from.as_str())
                && EDGE_ABOVE.contains(&to.as_str())
        })
        .map(|((_, from, to), at)| format!("{from} -> {to} ({at})"))
        .collect();
    assert!(
        wrong.is_empty(),
        "the edge's plan and value types name modules above them:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let read = |path: &Path| std::fs::read_to_string(workspace.join(path)).ok();
    let mut found = BTreeMap::new();
    for root in ROOTS {
        let graph = ModuleGraph::of_crate(Path::new(root), &read)
            .unwrap_or_else(|e| panic!("cannot read the crate at {root}: {e}"));
        for circle in graph.circles() {
            found.insert(
                (
                    root.to_string(),
                    circle.parent.clone(),
                    circle.members.clone(),
                ),
                circle,
            );
        }
    }
    let known: BTreeSet<(String, String, Vec<String>)> = KNOWN_CIRCLES
        .iter()
        .map(|(root, parent, members)| {
            let mut members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
            members.sort();
            (root.to_string(), parent.to_string(), members)
        })
        .collect();
    let mut problems = Vec::new();
    for (key, circle) in &found {
        if !known.contains(key) {
            problems.push(format!("new circle in {}: {circle}", key.0));
        }
    }
    for key in &known {
        if !found.contains_key(key) {
            problems.push(format!(
                "{key:?} is in KNOWN_CIRCLES but no longer a circle: remove it from the list"
            ));
        }
    }
    eprintln!("import circles found ({}):", found.len());
    for ((root, _, _), circle) in &found {
        eprintln!("  {root}: {circle}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check itself, on a small crate held in memory: a circle through `super::` and one through a
/// macro and a root re-export are found, a parent/child pair and test-only imports are not.
#[test]
fn the_check_finds_circles_in_a_small_crate() {
    let files = BTreeMap::from([
        (
            "src/lib.rs",
            "mod a; mod b; mod c; pub mod d; mod e; pub use e::Thing;",
        ),
        // a -> b (use), b -> a (super path in an expression): a circle.
        (
            "src/a.rs",
            "use crate::b::helper; pub fn run() { helper() }",
        ),
        (
            "src/b.rs",
            "pub fn helper() { super::a::run(); }\n#[cfg(test)] mod tests { use crate::c::X; }",
        ),
        // c -> d, d -> c only in test code: not a circle.
        ("src/c.rs", "pub struct X; fn f(_: crate::d::Y) {}"),
        (
            "src/d/mod.rs",
            "pub struct Y; mod inner; #[cfg(test)] fn t() { let _ = crate::c::X; }",
        ),
        // A child naming its parent: normal, not a circle. But `d::inner` names `e` (through the
        // root's re-export of `e::Thing`, inside a macro's tokens) and `e` names `d`: a circle.
        (
            "src/d/inner.rs",
            "use super::Y; fn g() { println!(\"{}\", crate::Thing::NAME); }",
        ),
        (
            "src/e.rs",
            "pub struct Thing; impl Thing { const NAME: &str = \"\"; } fn h(_: &crate::d::Y) {}",
        ),
    ]);
    let read = |path: &Path| files.get(path.to_str()?).map(|s| s.to_string());
    let graph = ModuleGraph::of_crate(Path::new("src/lib.rs"), &read).unwrap();
    assert!(
        graph
            .modules
            .contains(&vec!["d".to_string(), "inner".to_string()])
    );
    let circles: Vec<(String, Vec<String>)> = graph
        .circles()
        .into_iter()
        .map(|c| (c.parent, c.members))
        .collect();
    assert_eq!(
        circles,
        [
            (String::new(), vec!["a".to_string(), "b".to_string()]),
            (String::new(), vec!["d".to_string(), "e".to_string()]),
        ]
    );
    let shown = graph.circles()[0].to_string();
    assert!(
        shown.contains("a -> b") && shown.contains("src/b.rs: super::a::run"),
        "{shown}"
    );
    // A crate whose `mod` names a missing file is an error, not a silent pass.
    let missing = BTreeMap::from([("src/lib.rs", "mod gone;")]);
    let read = |path: &Path| missing.get(path.to_str()?).map(|s| s.to_string());
    assert!(ModuleGraph::of_crate(Path::new("src/lib.rs"), &read).is_err());
}

/// The modules of one crate and the dependencies between siblings.
struct ModuleGraph {
    /// Every module path (`[]` is the crate root).
    modules: BTreeSet<Vec<String>>,
    /// `(parent, from child, to child)` -> where it is named first: `file: path`.
    edges: BTreeMap<(Vec<String>, String, String), String>,
}

/// A strongly connected set of sibling modules.
struct Circle {
    /// `a::b`, or empty for the crate root.
    parent: String,
    /// Sorted.
    members: Vec<String>,
    /// `a -> b (file: path)` for every dependency inside the circle.
    links: Vec<String>,
}

impl std::fmt::Display for Circle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let under = if self.parent.is_empty() {
            "the crate root".to_string()
        } else {
            format!("`{}`", self.parent)
        };
        write!(
            f,
            "{{{}}} under {under}: {}",
            self.members.join(", "),
            self.links.join("; ")
        )
    }
}

/// A parsed file and the module it is.
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    syntax: syn::File,
}

impl ModuleGraph {
    /// Reads the crate whose root file is `root`, following `mod name;` to `name.rs` or `name/mod.rs`.
    fn of_crate(
        root: &Path,
        read: &dyn Fn(&Path) -> Option<String>,
    ) -> Result<ModuleGraph, String> {
        let mut files = Vec::new();
        load(root, Vec::new(), true, read, &mut files)?;
        let mut modules = BTreeSet::new();
        let mut reexports = BTreeMap::new();
        for file in &files {
            modules.insert(file.module.clone());
            collect_inline_modules(&file.syntax.items, &file.module, &mut modules);
            if file.module.is_empty() {
                collect_reexports(&file.syntax.items, &mut reexports);
            }
        }
        let mut edges = BTreeMap::new();
        for file in &files {
            let mut finder = References {
                module: file.module.clone(),
                found: Vec::new(),
            };
            finder.visit_file(&file.syntax);
            for (from, path) in finder.found {
                let Some(target) = resolve(&from, &path, &modules, &reexports) else {
                    continue;
                };
                // The first level where the two differ: siblings under their common parent.
                let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
                if common < from.len() && common < target.len() {
                    let key = (
                        from[..common].to_vec(),
                        from[common].clone(),
                        target[common].clone(),
                    );
                    edges
                        .entry(key)
                        .or_insert_with(|| format!("{}: {}", file.path.display(), path.join("::")));
                }
            }
        }
        Ok(ModuleGraph { modules, edges })
    }

    /// The circles of every level, parents first.
    fn circles(&self) -> Vec<Circle> {
        let mut by_parent: BTreeMap<&Vec<String>, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
        for (parent, from, to) in self.edges.keys() {
            by_parent
                .entry(parent)
                .or_default()
                .entry(from)
                .or_default()
                .insert(to);
        }
        let mut circles = Vec::new();
        for (parent, graph) in by_parent {
            let reach = |start: &str| {
                let mut seen = BTreeSet::new();
                let mut todo = vec![start];
                while let Some(node) = todo.pop() {
                    for next in graph.get(node).into_iter().flatten() {
                        if seen.insert(*next) {
                            todo.push(next);
                        }
                    }
                }
                seen
            };
            let reachable: BTreeMap<&str, BTreeSet<&str>> =
                graph.keys().map(|node| (*node, reach(node))).collect();
            let mut placed = BTreeSet::new();
            for (node, from_node) in &reachable {
                if placed.contains(node) || !from_node.contains(node) {
                    continue;
                }
                let members: Vec<&str> = from_node
                    .iter()
                    .copied()
                    .filter(|other| reachable.get(other).is_some_and(|r| r.contains(node)))
                    .collect();
                placed.extend(members.iter().copied());
                let links = self
                    .edges
                    .iter()
                    .filter(|((p, a, b), _)| {
                        p == parent
                            && members.contains(&a.as_str())
                            && members.contains(&b.as_str())
                    })
                    .map(|((_, a, b), at)| format!("{a} -> {b} ({at})"))
                    .collect();
                circles.push(Circle {
                    parent: parent.join("::"),
                    members: members.iter().map(|m| m.to_string()).collect(),
                    links,
                });
            }
        }
        circles
    }
}

/// Parses `path` (the module `module`) and, recursively, the files of its `mod name;` declarations.
fn load(
    path: &Path,
    module: Vec<String>,
    owns_directory: bool,
    read: &dyn Fn(&Path) -> Option<String>,
    files: &mut Vec<SourceFile>,
) -> Result<(), String> {
    let text = read(path).ok_or_else(|| format!("cannot read {}", path.display()))?;
    let syntax = syn::parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    // `lib.rs`, `main.rs` and `mod.rs` keep their children beside them, `x.rs` in `x/`.
    let directory = if owns_directory {
        path.parent().unwrap_or(Path::new("")).to_path_buf()
    } else {
        path.with_extension("")
    };
    let mut children = Vec::new();
    declared_files(&syntax.items, &directory, &module, &mut children);
    files.push(SourceFile {
        path: path.to_path_buf(),
        module,
        syntax,
    });
    for (directory, module) in children {
        let name = module.last().expect("a child module has a name");
        let flat = directory.join(format!("{name}.rs"));
        let nested = directory.join(name).join("mod.rs");
        if read(&flat).is_some() {
            load(&flat, module, false, read, files)?;
        } else if read(&nested).is_some() {
            load(&nested, module, true, read, files)?;
        } else {
            return Err(format!(
                "module {} has neither {} nor {}",
                module.join("::"),
                flat.display(),
                nested.display()
            ));
        }
    }
    Ok(())
}

/// The `mod name;` declarations among `items` (inside inline modules too): the directory their file is
/// in and their module path.
fn declared_files(
    items: &[syn::Item],
    directory: &Path,
    module: &[String],
    out: &mut Vec<(PathBuf, Vec<String>)>,
) {
    for item in items {
        if let syn::Item::Mod(m) = item
            && !is_test_only(&m.attrs)
        {
            let mut child = module.to_vec();
            child.push(m.ident.to_string());
            match &m.content {
                None => out.push((directory.to_path_buf(), child)),
                Some((_, inner)) => {
                    declared_files(inner, &directory.join(m.ident.to_string()), &child, out)
                }
            }
        }
    }
}

fn collect_inline_modules(items: &[syn::Item], module: &[String], out: &mut BTreeSet<Vec<String>>) {
    for item in items {
        if let syn::Item::Mod(m) = item
            && let Some((_, inner)) = &m.content
        {
            let mut child = module.to_vec();
            child.push(m.ident.to_string());
            collect_inline_modules(inner, &child, out);
            out.insert(child);
        }
    }
}

/// `pub use x::Name;` in the crate root: `Name` -> `x` (the module it comes from).
fn collect_reexports(items: &[syn::Item], out: &mut BTreeMap<String, String>) {
    fn walk(tree: &syn::UseTree, first: Option<&str>, out: &mut BTreeMap<String, String>) {
        match tree {
            syn::UseTree::Path(p) => {
                let ident = p.ident.to_string();
                let first = match first {
                    None if ident == "crate" => None,
                    None => Some(ident.as_str()),
                    some => some,
                };
                walk(&p.tree, first, out);
            }
            syn::UseTree::Name(n) => {
                if let Some(first) = first {
                    out.insert(n.ident.to_string(), first.to_string());
                }
            }
            syn::UseTree::Rename(r) => {
                if let Some(first) = first {
                    out.insert(r.rename.to_string(), first.to_string());
                }
            }
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| walk(t, first, out)),
            syn::UseTree::Glob(_) => {}
        }
    }
    for item in items {
        if let syn::Item::Use(u) = item
            && !is_test_only(&u.attrs)
        {
            walk(&u.tree, None, out);
        }
    }
}

/// The module a path from `from` names, if it names one of this crate's modules (or something in it):
/// `crate::` and `super::` paths only, cut to the longest prefix that is a module.
fn resolve(
    from: &[String],
    path: &[String],
    modules: &BTreeSet<Vec<String>>,
    reexports: &BTreeMap<String, String>,
) -> Option<Vec<String>> {
    let mut base: Vec<String>;
    let mut rest = path;
    match path.first()?.as_str() {
        "crate" => {
            base = Vec::new();
            rest = &rest[1..];
        }
        "self" => {
            base = from.to_vec();
            rest = &rest[1..];
        }
        "super" => {
            base = from.to_vec();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    if base.is_empty()
        && let Some(first) = rest.first()
        && let Some(module) = reexports.get(first)
        && !modules.contains(&vec![first.clone()])
    {
        base.push(module.clone());
        rest = &rest[1..];
    }
    let mut target = base;
    let mut best = modules.contains(&target).then(|| target.clone());
    for segment in rest {
        target.push(segment.clone());
        if modules.contains(&target) {
            best = Some(target.clone());
        }
    }
    best.filter(|t| !t.is_empty())
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string() == "test")
    })
}

/// Every `crate::`/`super::`/`self::` path in a file, with the module it is written in.
struct References {
    module: Vec<String>,
    found: Vec<(Vec<String>, Vec<String>)>,
}

impl References {
    fn note(&mut self, path: Vec<String>) {
        if path.len() > 1 && matches!(path[0].as_str(), "crate" | "super" | "self") {
            self.found.push((self.module.clone(), path));
        }
    }
}

impl<'ast> Visit<'ast> for References {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            _ => &[],
        };
        if !is_test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // Only inline modules have content here; a `mod x;` file is visited on its own.
        if let Some((_, items)) = &m.content {
            self.module.push(m.ident.to_string());
            for item in items {
                self.visit_item(item);
            }
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        fn walk(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            match tree {
                syn::UseTree::Path(p) => {
                    prefix.push(p.ident.to_string());
                    walk(&p.tree, prefix, out);
                    prefix.pop();
                }
                syn::UseTree::Name(n) => {
                    let mut path = prefix.clone();
                    if n.ident != "self" {
                        path.push(n.ident.to_string());
                    }
                    out.push(path);
                }
                syn::UseTree::Rename(r) => {
                    let mut path = prefix.clone();
                    if r.ident != "self" {
                        path.push(r.ident.to_string());
                    }
                    out.push(path);
                }
                syn::UseTree::Glob(_) => out.push(prefix.clone()),
                syn::UseTree::Group(g) => g.items.iter().for_each(|t| walk(t, prefix, out)),
            }
        }
        let mut paths = Vec::new();
        walk(&u.tree, &mut Vec::new(), &mut paths);
        for path in paths {
            self.note(path);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            self.note(path.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // A macro's arguments are tokens, not syntax: find `crate :: a :: b` runs in them.
        fn flatten(tokens: proc_macro2::TokenStream, out: &mut Vec<proc_macro2::TokenTree>) {
            for token in tokens {
                match token {
                    proc_macro2::TokenTree::Group(g) => {
                        out.push(proc_macro2::TokenTree::Punct(proc_macro2::Punct::new(
                            ';',
                            proc_macro2::Spacing::Alone,
                        )));
                        flatten(g.stream(), out);
                    }
                    other => out.push(other),
                }
            }
        }
        let mut tokens = Vec::new();
        flatten(mac.tokens.clone(), &mut tokens);
        let mut i = 0;
        while i < tokens.len() {
            let mut path = Vec::new();
            let mut j = i;
            while let Some(proc_macro2::TokenTree::Ident(ident)) = tokens.get(j) {
                path.push(ident.to_string());
                let colons = matches!(
                    (tokens.get(j + 1), tokens.get(j + 2)),
                    (Some(proc_macro2::TokenTree::Punct(a)), Some(proc_macro2::TokenTree::Punct(b)))
                        if a.as_char() == ':' && b.as_char() == ':'
                );
                if !colons {
                    break;
                }
                j += 3;
            }
            let preceded_by_colons = i >= 1
                && matches!(&tokens[i - 1], proc_macro2::TokenTree::Punct(p) if p.as_char() == ':');
            if !preceded_by_colons {
                self.note(path.clone());
            }
            i = j.max(i) + 1;
        }
        syn::visit::visit_macro(self, mac);
    }
}
