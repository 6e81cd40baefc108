//! Renders the WIT plugin contract (`wit/`) as a Markdown reference page.
//!
//! [`render`] parses a WIT package directory with `wit-parser` and returns the
//! page: the package, then every interface in file order (its doc, the types
//! it `use`s, its types and its functions with their full WIT signatures),
//! then the worlds with their imports and exports. Every type, function,
//! interface and world gets an explicit anchor (`<a id="…">`) and every named
//! type a signature or field mentions links to its definition.
//!
//! The output depends only on the WIT sources: files are read in name order
//! and items are listed in source order, so two runs give identical bytes.
//! The `lifeboat-witdoc` binary writes the page to
//! `docs/reference/contract.md`, or checks (`--check`) that the committed
//! page is fresh.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use wit_parser::{
    AstItem, Docs, Function, FunctionKind, Handle, InterfaceId, PackageId, Resolve, SourceMap,
    Span, Stability, Type, TypeDefKind, TypeId, TypeOwner, UnresolvedPackageGroup, WorldId,
    WorldItem, WorldKey,
};

/// The WIT package directory, relative to the workspace root.
pub const DEFAULT_WIT_DIR: &str = "wit";
/// The generated page, relative to the workspace root.
pub const DEFAULT_OUT: &str = "docs/reference/contract.md";
/// The command that regenerates the page.
pub const FIX_COMMAND: &str = "cargo run -p lifeboat-witdoc";

/// The message printed when the page `out` no longer matches the WIT `wit`.
pub fn stale_message(out: &str, wit: &str) -> String {
    format!("{out} is out of date with {wit}; run `{FIX_COMMAND}`")
}

/// Why the reference could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum WitdocError {
    /// The WIT directory (or its `deps` directory) could not be listed.
    #[error("cannot read the WIT directory {}: {source}", path.display())]
    ReadDir { path: PathBuf, source: io::Error },
    /// A WIT file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    /// The directory holds no `*.wit` file.
    #[error("no .wit files in {}", .0.display())]
    NoWitFiles(PathBuf),
    /// A `deps` entry this tool does not read (a `.wasm` or `.wat` package).
    #[error(
        "unsupported WIT dependency {}: only .wit files and directories of them are read",
        .0.display()
    )]
    UnsupportedDep(PathBuf),
    /// The WIT does not parse or resolve; `message` points at the source.
    #[error("invalid WIT in {}:\n{message}", dir.display())]
    Wit { dir: PathBuf, message: String },
}

/// The `*.wit` files directly in `dir`, sorted by file name.
pub fn wit_files(dir: &Path) -> Result<Vec<PathBuf>, WitdocError> {
    let read_dir_err = |source| WitdocError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_err)? {
        let path = entry.map_err(read_dir_err)?.path();
        if path.extension().is_some_and(|e| e == "wit") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses the WIT package in `wit_dir` (and its `deps/`, if any) and renders
/// its Markdown reference.
pub fn render(wit_dir: &Path) -> Result<String, WitdocError> {
    let main = read_sources(wit_dir)?;
    let mut deps = Vec::new();
    let deps_dir = wit_dir.join("deps");
    if deps_dir.is_dir() {
        let mut entries = fs::read_dir(&deps_dir)
            .and_then(|it| {
                it.map(|e| e.map(|e| e.path()))
                    .collect::<io::Result<Vec<_>>>()
            })
            .map_err(|source| WitdocError::ReadDir {
                path: deps_dir.clone(),
                source,
            })?;
        entries.sort();
        for path in entries {
            if path.is_dir() {
                deps.push(read_sources(&path)?);
            } else {
                match path.extension().and_then(|e| e.to_str()) {
                    Some("wit") => deps.push(vec![read_source(&path)?]),
                    Some("wasm" | "wat") => return Err(WitdocError::UnsupportedDep(path)),
                    _ => {}
                }
            }
        }
    }
    render_sources(wit_dir, main, deps)
}

/// One WIT file: its path (for messages) and its text.
struct Source {
    path: PathBuf,
    text: String,
}

fn read_source(path: &Path) -> Result<Source, WitdocError> {
    let text = fs::read_to_string(path).map_err(|source| WitdocError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Source {
        path: path.to_path_buf(),
        text,
    })
}

fn read_sources(dir: &Path) -> Result<Vec<Source>, WitdocError> {
    let files = wit_files(dir)?;
    if files.is_empty() {
        return Err(WitdocError::NoWitFiles(dir.to_path_buf()));
    }
    files.iter().map(|f| read_source(f)).collect()
}

fn parse_group(dir: &Path, sources: Vec<Source>) -> Result<UnresolvedPackageGroup, WitdocError> {
    let mut map = SourceMap::new();
    for source in sources {
        map.push(&source.path, source.text);
    }
    map.parse().map_err(|(map, e)| WitdocError::Wit {
        dir: dir.to_path_buf(),
        message: e.render(&map),
    })
}

fn render_sources(
    dir: &Path,
    main: Vec<Source>,
    deps: Vec<Vec<Source>>,
) -> Result<String, WitdocError> {
    let file_names: Vec<String> = main
        .iter()
        .map(|s| {
            s.path.file_name().map_or_else(
                || s.path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let main = parse_group(dir, main)?;
    let written = written_world_items(&main);
    let deps = deps
        .into_iter()
        .map(|d| parse_group(dir, d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut resolve = Resolve::default();
    let pkg = resolve
        .push_groups(main, deps)
        .map_err(|e| WitdocError::Wit {
            dir: dir.to_path_buf(),
            message: e.render(&resolve.source_map),
        })?;
    let page = Renderer {
        r: &resolve,
        pkg,
        written,
    }
    .page(&file_names);
    Ok(page)
}

/// Import or export.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    Import,
    Export,
}

/// The interfaces each world names itself, as `(world, direction, id)`.
///
/// Resolving a world adds the interfaces its imports and exports depend on;
/// the unresolved package still tells which ones the source wrote.
fn written_world_items(group: &UnresolvedPackageGroup) -> BTreeSet<(String, Dir, String)> {
    let pkg = &group.main;
    let mut foreign = Vec::new();
    for (pkg_name, items) in &pkg.foreign_deps {
        for (iface, (item, _)) in items {
            if let AstItem::Interface(id) = item {
                let version = pkg_name
                    .version
                    .as_ref()
                    .map(|v| format!("@{v}"))
                    .unwrap_or_default();
                let qualified =
                    format!("{}:{}/{iface}{version}", pkg_name.namespace, pkg_name.name);
                foreign.push((*id, qualified));
            }
        }
    }
    let local_version = pkg
        .name
        .version
        .as_ref()
        .map(|v| format!("@{v}"))
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    for (_, world) in pkg.worlds.iter() {
        for (dir, items) in [(Dir::Import, &world.imports), (Dir::Export, &world.exports)] {
            for key in items.keys() {
                let id = match key {
                    WorldKey::Name(name) => name.clone(),
                    WorldKey::Interface(id) => {
                        if let Some((_, q)) = foreign.iter().find(|(f, _)| f == id) {
                            q.clone()
                        } else if let Some(name) = &pkg.interfaces[*id].name {
                            format!(
                                "{}:{}/{name}{local_version}",
                                pkg.name.namespace, pkg.name.name
                            )
                        } else {
                            continue;
                        }
                    }
                };
                out.insert((world.name.clone(), dir, id));
            }
        }
    }
    out
}

/// Identifiers that must be written with a `%` prefix in WIT.
const KEYWORDS: &[&str] = &[
    "as",
    "async",
    "bool",
    "borrow",
    "char",
    "constructor",
    "enum",
    "error-context",
    "export",
    "f32",
    "f64",
    "flags",
    "from",
    "func",
    "future",
    "import",
    "include",
    "interface",
    "list",
    "map",
    "own",
    "package",
    "record",
    "resource",
    "result",
    "s16",
    "s32",
    "s64",
    "s8",
    "static",
    "stream",
    "string",
    "tuple",
    "type",
    "u16",
    "u32",
    "u64",
    "u8",
    "use",
    "variant",
    "with",
    "world",
];

/// `name` as written in WIT source (`%type` for the keyword `type`).
fn wit_ident(name: &str) -> String {
    if KEYWORDS.contains(&name) {
        format!("%{name}")
    } else {
        name.to_string()
    }
}

/// The doc comment, trimmed, if there is one.
fn doc_text(docs: &Docs) -> Option<&str> {
    docs.contents
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Indents every line but the first by `indent`, for list items.
fn indent_rest(text: &str, indent: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(indent);
            }
        }
        out.push_str(line);
    }
    out
}

/// Position in the sources, for sorting items in file order.
fn pos(span: Span) -> u32 {
    if span.is_known() {
        span.start()
    } else {
        u32::MAX
    }
}

/// A piece of a type expression or signature.
enum Tok {
    /// Literal WIT text.
    Code(String),
    /// A named type, linked to its definition when it is in this package.
    Ref {
        text: String,
        anchor: Option<String>,
    },
}

/// The tokens as plain WIT text.
fn plain(toks: &[Tok]) -> String {
    toks.iter()
        .map(|t| match t {
            Tok::Code(s) | Tok::Ref { text: s, .. } => s.as_str(),
        })
        .collect()
}

/// The tokens as Markdown: code spans, with links for named types.
fn md(toks: &[Tok]) -> String {
    fn flush(out: &mut String, code: &mut String) {
        if !code.is_empty() {
            out.push('`');
            out.push_str(code);
            out.push('`');
            code.clear();
        }
    }
    let mut out = String::new();
    let mut code = String::new();
    for t in toks {
        match t {
            Tok::Code(s)
            | Tok::Ref {
                text: s,
                anchor: None,
            } => code.push_str(s),
            Tok::Ref {
                text,
                anchor: Some(anchor),
            } => {
                flush(&mut out, &mut code);
                out.push_str(&format!("[`{text}`](#{anchor})"));
            }
        }
    }
    flush(&mut out, &mut code);
    out
}

/// The named types the tokens link to, each once, in order.
fn links(toks: &[Tok]) -> Vec<String> {
    let mut seen = Vec::<&str>::new();
    let mut out = Vec::new();
    for t in toks {
        if let Tok::Ref {
            text,
            anchor: Some(anchor),
        } = t
            && !seen.contains(&anchor.as_str())
        {
            seen.push(anchor);
            out.push(format!("[`{text}`](#{anchor})"));
        }
    }
    out
}

fn stability_note(s: &Stability) -> Option<String> {
    match s {
        Stability::Unknown => None,
        Stability::Stable { since, deprecated } => Some(match deprecated {
            Some(d) => format!("*Since `{since}`; deprecated since `{d}`.*"),
            None => format!("*Since `{since}`.*"),
        }),
        Stability::Unstable {
            feature,
            deprecated,
        } => Some(match deprecated {
            Some(d) => format!("*Unstable (feature `{feature}`); deprecated since `{d}`.*"),
            None => format!("*Unstable (feature `{feature}`).*"),
        }),
    }
}

/// A Markdown page under construction: blocks separated by blank lines.
#[derive(Default)]
struct Page {
    out: String,
}

impl Page {
    fn block(&mut self, text: &str) {
        self.out.push_str(text.trim_end());
        self.out.push_str("\n\n");
    }

    fn opt(&mut self, text: Option<impl AsRef<str>>) {
        if let Some(t) = text {
            self.block(t.as_ref());
        }
    }

    /// The page, ending with exactly one newline.
    fn finish(mut self) -> String {
        while self.out.ends_with("\n\n") {
            self.out.pop();
        }
        self.out
    }
}

struct Renderer<'a> {
    r: &'a Resolve,
    pkg: PackageId,
    written: BTreeSet<(String, Dir, String)>,
}

impl Renderer<'_> {
    // ---- names and anchors -------------------------------------------------

    fn interface_anchor(&self, id: InterfaceId) -> Option<String> {
        let i = &self.r.interfaces[id];
        match (&i.name, i.package) {
            (Some(name), Some(p)) if p == self.pkg => Some(format!("interface-{name}")),
            _ => None,
        }
    }

    fn world_anchor(&self, id: WorldId) -> Option<String> {
        let w = &self.r.worlds[id];
        (w.package == Some(self.pkg)).then(|| format!("world-{}", w.name))
    }

    /// The fully qualified name of an interface, e.g. `lifeboat:plugin/types@0.1.3`.
    fn interface_id(&self, id: InterfaceId) -> Option<String> {
        let i = &self.r.interfaces[id];
        match (&i.name, i.package) {
            (Some(name), Some(p)) => Some(self.r.id_of_name(p, name)),
            _ => None,
        }
    }

    /// The interface as Markdown: a link when it is documented here.
    fn interface_md(&self, id: InterfaceId) -> String {
        let i = &self.r.interfaces[id];
        match (self.interface_anchor(id), &i.name) {
            (Some(anchor), Some(name)) => format!("[`{name}`](#{anchor})"),
            _ => match self.interface_id(id) {
                Some(q) => format!("`{q}`"),
                None => "an inline interface".to_string(),
            },
        }
    }

    /// The name of the interface or world that owns a type, if it has an anchor.
    fn owner_prefix(&self, owner: TypeOwner) -> Option<String> {
        match owner {
            TypeOwner::Interface(i) => {
                let iface = &self.r.interfaces[i];
                match (&iface.name, iface.package) {
                    (Some(name), Some(p)) if p == self.pkg => Some(name.clone()),
                    _ => None,
                }
            }
            TypeOwner::World(w) => {
                let world = &self.r.worlds[w];
                (world.package == Some(self.pkg)).then(|| world.name.clone())
            }
            TypeOwner::None => None,
        }
    }

    /// A `use`d type: an alias of a type of another interface.
    fn used_from(&self, id: TypeId) -> Option<TypeId> {
        let ty = &self.r.types[id];
        match ty.kind {
            TypeDefKind::Type(Type::Id(target))
                if ty.name.is_some() && self.r.types[target].owner != ty.owner =>
            {
                Some(target)
            }
            _ => None,
        }
    }

    /// Follows `use`s to the type's definition.
    fn definition(&self, mut id: TypeId) -> TypeId {
        // A chain of uses is finite (WIT forbids cycles); bound it anyway.
        for _ in 0..64 {
            match self.used_from(id) {
                Some(target) => id = target,
                None => break,
            }
        }
        id
    }

    fn type_anchor(&self, id: TypeId) -> Option<String> {
        let def = &self.r.types[self.definition(id)];
        let name = def.name.as_ref()?;
        Some(format!("{}.{name}", self.owner_prefix(def.owner)?))
    }

    fn func_anchor(&self, prefix: &str, f: &Function) -> String {
        match f.kind.resource() {
            Some(res) => {
                let res = self.r.types[res].name.as_deref().unwrap_or("resource");
                format!("{prefix}.{res}.{}", f.item_name())
            }
            None => format!("{prefix}.{}", f.item_name()),
        }
    }

    // ---- type expressions and signatures -----------------------------------

    fn ty_toks(&self, ty: &Type, out: &mut Vec<Tok>) {
        let prim = match ty {
            Type::Bool => "bool",
            Type::U8 => "u8",
            Type::U16 => "u16",
            Type::U32 => "u32",
            Type::U64 => "u64",
            Type::S8 => "s8",
            Type::S16 => "s16",
            Type::S32 => "s32",
            Type::S64 => "s64",
            Type::F32 => "f32",
            Type::F64 => "f64",
            Type::Char => "char",
            Type::String => "string",
            Type::ErrorContext => "error-context",
            Type::Id(id) => {
                let def = &self.r.types[*id];
                match &def.name {
                    Some(name) => out.push(Tok::Ref {
                        text: wit_ident(name),
                        anchor: self.type_anchor(*id),
                    }),
                    None => self.kind_toks(&def.kind, out),
                }
                return;
            }
        };
        out.push(Tok::Code(prim.to_string()));
    }

    fn generic(
        &self,
        name: &str,
        args: &[Option<&Type>],
        extra: Option<String>,
        out: &mut Vec<Tok>,
    ) {
        out.push(Tok::Code(format!("{name}<")));
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                out.push(Tok::Code(", ".to_string()));
            }
            match arg {
                Some(t) => self.ty_toks(t, out),
                None => out.push(Tok::Code("_".to_string())),
            }
        }
        if let Some(extra) = extra {
            out.push(Tok::Code(format!(", {extra}")));
        }
        out.push(Tok::Code(">".to_string()));
    }

    /// The WIT expression of an anonymous type (or the body of a named alias).
    fn kind_toks(&self, kind: &TypeDefKind, out: &mut Vec<Tok>) {
        match kind {
            TypeDefKind::Type(t) => self.ty_toks(t, out),
            TypeDefKind::Option(t) => self.generic("option", &[Some(t)], None, out),
            TypeDefKind::List(t) => self.generic("list", &[Some(t)], None, out),
            TypeDefKind::FixedLengthList(t, n) => {
                self.generic("list", &[Some(t)], Some(n.to_string()), out)
            }
            TypeDefKind::Map(k, v) => self.generic("map", &[Some(k), Some(v)], None, out),
            TypeDefKind::Tuple(t) => {
                let args: Vec<Option<&Type>> = t.types.iter().map(Some).collect();
                self.generic("tuple", &args, None, out)
            }
            TypeDefKind::Result(r) => match (&r.ok, &r.err) {
                (None, None) => out.push(Tok::Code("result".to_string())),
                (Some(ok), None) => self.generic("result", &[Some(ok)], None, out),
                (ok, Some(err)) => self.generic("result", &[ok.as_ref(), Some(err)], None, out),
            },
            TypeDefKind::Future(t) | TypeDefKind::Stream(t) => {
                let name = if matches!(kind, TypeDefKind::Future(_)) {
                    "future"
                } else {
                    "stream"
                };
                match t {
                    Some(t) => self.generic(name, &[Some(t)], None, out),
                    None => out.push(Tok::Code(name.to_string())),
                }
            }
            TypeDefKind::Handle(Handle::Own(res)) => self.ty_toks(&Type::Id(*res), out),
            TypeDefKind::Handle(Handle::Borrow(res)) => {
                self.generic("borrow", &[Some(&Type::Id(*res))], None, out)
            }
            TypeDefKind::Record(_)
            | TypeDefKind::Resource
            | TypeDefKind::Flags(_)
            | TypeDefKind::Variant(_)
            | TypeDefKind::Enum(_)
            | TypeDefKind::Unknown => out.push(Tok::Code(kind.as_str().to_string())),
        }
    }

    /// The function as one line of WIT, e.g. `f: func(a: u32) -> string;`.
    fn func_toks(&self, f: &Function) -> Vec<Tok> {
        let name = wit_ident(f.item_name());
        let (head, has_self) = match f.kind {
            FunctionKind::Freestanding => (format!("{name}: func("), false),
            FunctionKind::Method(_) => (format!("{name}: func("), true),
            FunctionKind::AsyncFreestanding => (format!("{name}: async func("), false),
            FunctionKind::AsyncMethod(_) => (format!("{name}: async func("), true),
            FunctionKind::Static(_) => (format!("{name}: static func("), false),
            FunctionKind::AsyncStatic(_) => (format!("{name}: static async func("), false),
            FunctionKind::Constructor(_) => ("constructor(".to_string(), false),
            FunctionKind::Getter => (format!("{name}: get("), false),
            FunctionKind::MethodGetter(_) => (format!("{name}: get("), true),
            FunctionKind::StaticGetter(_) => (format!("{name}: static get("), false),
            FunctionKind::Setter => (format!("{name}: set("), false),
            FunctionKind::MethodSetter(_) => (format!("{name}: set("), true),
            FunctionKind::StaticSetter(_) => (format!("{name}: static set("), false),
        };
        let mut out = vec![Tok::Code(head)];
        let params = f.params.iter().skip(usize::from(has_self));
        for (i, p) in params.enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            out.push(Tok::Code(format!("{sep}{}: ", wit_ident(&p.name))));
            self.ty_toks(&p.ty, &mut out);
        }
        out.push(Tok::Code(")".to_string()));
        if let Some(result) = &f.result
            && !f.is_constructor_shorthand(self.r)
        {
            out.push(Tok::Code(" -> ".to_string()));
            self.ty_toks(result, &mut out);
        }
        out.push(Tok::Code(";".to_string()));
        out
    }

    // ---- the page ------------------------------------------------------------

    fn page(&self, file_names: &[String]) -> String {
        let pkg = &self.r.packages[self.pkg];
        let mut p = Page::default();
        p.block(&format!(
            "<!-- Generated by lifeboat-witdoc from the WIT package: do not edit. Run `{FIX_COMMAND}`. -->"
        ));
        p.block(&format!("# WIT contract reference: `{}`", pkg.name));
        let sources: Vec<String> = file_names.iter().map(|f| format!("`{f}`")).collect();
        p.block(&format!(
            "This page is generated from the WIT sources ({}) by `lifeboat-witdoc`; \
             change the WIT, then run `{FIX_COMMAND}`. \
             The rules that host and plugins keep beyond the types are in \
             [the plugin contract](../plugin-contract.md).",
            sources.join(", ")
        ));
        let version = pkg
            .name
            .version
            .as_ref()
            .map_or_else(|| "none".to_string(), |v| format!("`{v}`"));
        p.block(&format!(
            "- Package: `{}:{}`\n- Version: {version}",
            pkg.name.namespace, pkg.name.name
        ));
        p.opt(doc_text(&pkg.docs));

        let mut interfaces: Vec<InterfaceId> = pkg.interfaces.values().copied().collect();
        interfaces.sort_by_key(|id| pos(self.r.interfaces[*id].span));
        let mut worlds: Vec<WorldId> = pkg.worlds.values().copied().collect();
        worlds.sort_by_key(|id| pos(self.r.worlds[*id].span));

        p.block("## Contents");
        let mut toc = Vec::new();
        for id in &interfaces {
            if let (Some(anchor), Some(name)) =
                (self.interface_anchor(*id), &self.r.interfaces[*id].name)
            {
                toc.push(format!("- Interface [`{name}`](#{anchor})"));
            }
        }
        for id in &worlds {
            if let Some(anchor) = self.world_anchor(*id) {
                toc.push(format!(
                    "- World [`{}`](#{anchor})",
                    self.r.worlds[*id].name
                ));
            }
        }
        p.block(&toc.join("\n"));

        for id in &interfaces {
            self.interface(&mut p, *id, &worlds);
        }
        for id in &worlds {
            self.world(&mut p, *id);
        }
        p.finish()
    }

    /// The worlds that import or export the interface, as Markdown.
    fn used_in(&self, id: InterfaceId, worlds: &[WorldId]) -> Vec<String> {
        let mut out = Vec::new();
        for w in worlds {
            let world = &self.r.worlds[*w];
            let has = |items: &wit_parser::IndexMap<WorldKey, WorldItem>| {
                items
                    .values()
                    .any(|i| matches!(i, WorldItem::Interface { id: x, .. } if *x == id))
            };
            let link = match self.world_anchor(*w) {
                Some(a) => format!("[`{}`](#{a})", world.name),
                None => format!("`{}`", world.name),
            };
            if has(&world.imports) {
                out.push(format!("imported by world {link}"));
            }
            if has(&world.exports) {
                out.push(format!("exported by world {link}"));
            }
        }
        out
    }

    fn interface(&self, p: &mut Page, id: InterfaceId, worlds: &[WorldId]) {
        let iface = &self.r.interfaces[id];
        let (Some(name), Some(anchor)) = (&iface.name, self.interface_anchor(id)) else {
            return;
        };
        p.block(&format!("## <a id=\"{anchor}\"></a>Interface `{name}`"));
        let mut facts = Vec::new();
        if let Some(q) = self.interface_id(id) {
            facts.push(format!("`{q}`"));
        }
        facts.extend(self.used_in(id, worlds));
        p.block(&facts.join(", "));
        p.opt(stability_note(&iface.stability));
        p.opt(doc_text(&iface.docs));

        let mut types: Vec<TypeId> = iface.types.values().copied().collect();
        types.sort_by_key(|t| pos(self.r.types[*t].span));
        let (uses, defs): (Vec<TypeId>, Vec<TypeId>) = types
            .into_iter()
            .partition(|t| self.used_from(*t).is_some());

        if !uses.is_empty() {
            p.block("### Uses");
            let lines: Vec<String> = uses.iter().map(|t| self.use_line(*t)).collect();
            p.block(&lines.join("\n"));
        }

        let mut funcs: Vec<&Function> = iface.functions.values().collect();
        funcs.sort_by_key(|f| pos(f.span));
        if !defs.is_empty() {
            p.block("### Types");
            for t in &defs {
                self.type_def(p, name, *t, &funcs);
            }
        }
        let free: Vec<&Function> = funcs
            .iter()
            .copied()
            .filter(|f| f.kind.resource().is_none())
            .collect();
        if !free.is_empty() {
            p.block("### Functions");
            for f in free {
                self.function(p, name, f, "####");
            }
        }
    }

    /// One line of the "Uses" list: the local name, linked to the definition.
    fn use_line(&self, id: TypeId) -> String {
        let ty = &self.r.types[id];
        let local = ty.name.as_deref().unwrap_or_default();
        let def_id = self.definition(id);
        let def = &self.r.types[def_id];
        let def_name = def.name.as_deref().unwrap_or_default();
        let target = match self.type_anchor(def_id) {
            Some(anchor) => format!("[`{def_name}`](#{anchor})"),
            None => format!("`{def_name}`"),
        };
        let from = match def.owner {
            TypeOwner::Interface(i) => format!(" from interface {}", self.interface_md(i)),
            TypeOwner::World(w) => format!(" from world `{}`", self.r.worlds[w].name),
            TypeOwner::None => String::new(),
        };
        if local == def_name {
            format!("- {target}{from}")
        } else {
            format!("- `{local}`: {target}{from}")
        }
    }

    fn type_def(&self, p: &mut Page, prefix: &str, id: TypeId, funcs: &[&Function]) {
        let ty = &self.r.types[id];
        let Some(name) = &ty.name else { return };
        let anchor = format!("{prefix}.{name}");
        let keyword = match &ty.kind {
            TypeDefKind::Record(_) => "record",
            TypeDefKind::Variant(_) => "variant",
            TypeDefKind::Enum(_) => "enum",
            TypeDefKind::Flags(_) => "flags",
            TypeDefKind::Resource => "resource",
            _ => "type",
        };
        p.block(&format!("#### <a id=\"{anchor}\"></a>{keyword} `{name}`"));
        p.opt(stability_note(&ty.stability));
        p.opt(doc_text(&ty.docs));
        let item = |label: String, docs: &Docs| match doc_text(docs) {
            Some(d) => format!("- {label} — {}", indent_rest(d, "  ")),
            None => format!("- {label}"),
        };
        match &ty.kind {
            TypeDefKind::Record(r) => {
                let lines: Vec<String> = r
                    .fields
                    .iter()
                    .map(|f| {
                        let mut toks = Vec::new();
                        self.ty_toks(&f.ty, &mut toks);
                        item(format!("`{}`: {}", f.name, md(&toks)), &f.docs)
                    })
                    .collect();
                p.block(&format!("Fields:\n\n{}", lines.join("\n")));
            }
            TypeDefKind::Variant(v) => {
                let lines: Vec<String> = v
                    .cases
                    .iter()
                    .map(|c| {
                        let label = match &c.ty {
                            Some(t) => {
                                let mut toks = vec![Tok::Code(format!("{}(", c.name))];
                                self.ty_toks(t, &mut toks);
                                toks.push(Tok::Code(")".to_string()));
                                md(&toks)
                            }
                            None => format!("`{}`", c.name),
                        };
                        item(label, &c.docs)
                    })
                    .collect();
                p.block(&format!("Cases:\n\n{}", lines.join("\n")));
            }
            TypeDefKind::Enum(e) => {
                let lines: Vec<String> = e
                    .cases
                    .iter()
                    .map(|c| item(format!("`{}`", c.name), &c.docs))
                    .collect();
                p.block(&format!("Cases:\n\n{}", lines.join("\n")));
            }
            TypeDefKind::Flags(f) => {
                let lines: Vec<String> = f
                    .flags
                    .iter()
                    .map(|c| item(format!("`{}`", c.name), &c.docs))
                    .collect();
                p.block(&format!("Flags:\n\n{}", lines.join("\n")));
            }
            TypeDefKind::Resource => {
                let methods: Vec<&Function> = funcs
                    .iter()
                    .copied()
                    .filter(|f| f.kind.resource() == Some(id))
                    .collect();
                for f in methods {
                    self.function(p, prefix, f, "#####");
                }
            }
            kind => {
                let mut toks = vec![Tok::Code(format!("type {} = ", wit_ident(name)))];
                self.kind_toks(kind, &mut toks);
                toks.push(Tok::Code(";".to_string()));
                p.block(&md(&toks));
            }
        }
    }

    fn function(&self, p: &mut Page, prefix: &str, f: &Function, level: &str) {
        let anchor = self.func_anchor(prefix, f);
        p.block(&format!(
            "{level} <a id=\"{anchor}\"></a>`{}`",
            f.item_name()
        ));
        let toks = self.func_toks(f);
        p.block(&format!("```wit\n{}\n```", plain(&toks)));
        p.opt(stability_note(&f.stability));
        p.opt(doc_text(&f.docs));
        let used = links(&toks);
        if !used.is_empty() {
            p.block(&format!("Types in the signature: {}", used.join(", ")));
        }
    }

    fn world(&self, p: &mut Page, id: WorldId) {
        let world = &self.r.worlds[id];
        let Some(anchor) = self.world_anchor(id) else {
            return;
        };
        p.block(&format!("## <a id=\"{anchor}\"></a>World `{}`", world.name));
        p.block(&format!("`{}`", self.r.id_of_name(self.pkg, &world.name)));
        p.opt(stability_note(&world.stability));
        p.opt(doc_text(&world.docs));
        p.block(
            "Imports are what the host provides to the component; exports are what the \
             component implements. Interfaces marked *implied* are not named in the world \
             but come with the items that use their types.",
        );

        let mut defs = Vec::new();
        for (dir, items) in [(Dir::Import, &world.imports), (Dir::Export, &world.exports)] {
            let title = match dir {
                Dir::Import => "### Imports",
                Dir::Export => "### Exports",
            };
            p.block(title);
            if items.is_empty() {
                p.block("None.");
                continue;
            }
            let mut lines = Vec::new();
            for (key, item) in items {
                lines.push(self.world_item(world, dir, key, item, &mut defs));
            }
            p.block(&lines.join("\n"));
        }
        if !defs.is_empty() {
            p.block("### Types");
            let funcs: Vec<&Function> = world
                .imports
                .values()
                .chain(world.exports.values())
                .filter_map(|i| match i {
                    WorldItem::Function(f) => Some(f),
                    _ => None,
                })
                .collect();
            for t in defs {
                self.type_def(p, &world.name, t, &funcs);
            }
        }
    }

    fn world_item(
        &self,
        world: &wit_parser::World,
        dir: Dir,
        key: &WorldKey,
        item: &WorldItem,
        defs: &mut Vec<TypeId>,
    ) -> String {
        match item {
            WorldItem::Interface { id, docs, .. } => {
                let mut line = match key {
                    WorldKey::Name(name) if self.r.interfaces[*id].name.is_none() => {
                        format!("- `{name}`: inline interface")
                    }
                    WorldKey::Name(name) => {
                        format!("- `{name}`: interface {}", self.interface_md(*id))
                    }
                    WorldKey::Interface(_) => format!("- Interface {}", self.interface_md(*id)),
                };
                if let (Some(q), true) =
                    (self.interface_id(*id), self.interface_anchor(*id).is_some())
                {
                    line.push_str(&format!(" (`{q}`)"));
                }
                let written_id = match key {
                    WorldKey::Name(name) => Some(name.clone()),
                    WorldKey::Interface(i) => self.interface_id(*i),
                };
                let written = written_id
                    .is_some_and(|w| self.written.contains(&(world.name.clone(), dir, w)));
                if !written {
                    let users = self.world_users(world, *id);
                    if users.is_empty() {
                        line.push_str(", *implied*");
                    } else {
                        line.push_str(&format!(", *implied*: used by {}", users.join(", ")));
                    }
                }
                if let Some(d) = doc_text(docs) {
                    line.push_str(&format!(" — {}", indent_rest(d, "  ")));
                }
                let iface = &self.r.interfaces[*id];
                if iface.name.is_none() {
                    // An inline interface has no section of its own: list its functions.
                    let mut funcs: Vec<&Function> = iface.functions.values().collect();
                    funcs.sort_by_key(|f| pos(f.span));
                    for f in funcs {
                        line.push_str(&format!("\n  - {}", md(&self.func_toks(f))));
                        if let Some(d) = doc_text(&f.docs) {
                            line.push_str(&format!(" — {}", indent_rest(d, "    ")));
                        }
                    }
                }
                line
            }
            WorldItem::Function(f) => {
                let mut line = format!("- Function {}", md(&self.func_toks(f)));
                if let Some(d) = doc_text(&f.docs) {
                    line.push_str(&format!(" — {}", indent_rest(d, "  ")));
                }
                line
            }
            WorldItem::Type { id, .. } => {
                if self.used_from(*id).is_some() {
                    self.use_line(*id).replacen("- ", "- Type ", 1)
                } else {
                    defs.push(*id);
                    let name = self.r.types[*id].name.as_deref().unwrap_or_default();
                    match self.type_anchor(*id) {
                        Some(anchor) => format!("- Type [`{name}`](#{anchor})"),
                        None => format!("- Type `{name}`"),
                    }
                }
            }
        }
    }

    /// The world's interfaces (imported or exported) that use types of `dep`.
    fn world_users(&self, world: &wit_parser::World, dep: InterfaceId) -> Vec<String> {
        let mut out = Vec::new();
        for item in world.imports.values().chain(world.exports.values()) {
            if let WorldItem::Interface { id, .. } = item
                && *id != dep
                && self.r.interface_direct_deps(*id).any(|d| d == dep)
            {
                let s = self.interface_md(*id);
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
