//! `lifeboat-witdoc [--check] [--wit DIR] [--out FILE]`
//!
//! Renders the WIT contract reference and writes it (default
//! `docs/reference/contract.md` from `wit/`, relative to the workspace root),
//! or with `--check` exits 1 when the file differs from what it would write.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use lifeboat_witdoc::{
    DEFAULT_OUT, DEFAULT_WIT_DIR, FIX_COMMAND, render, stale_message, wit_files,
};

const USAGE: &str = "usage: lifeboat-witdoc [--check] [--wit DIR] [--out FILE]

Generates the Markdown reference of the WIT plugin contract.

  --check     do not write; exit 1 if FILE is out of date
  --wit DIR   the WIT package directory (default: wit/ of the workspace)
  --out FILE  the page to write (default: docs/reference/contract.md of the workspace)";

struct Args {
    check: bool,
    wit: Option<PathBuf>,
    out: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut args = Args {
        check: false,
        wit: None,
        out: None,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--check") => args.check = true,
            Some("--wit") => {
                args.wit = Some(it.next().context("--wit needs a directory")?.into());
            }
            Some("--out") => {
                args.out = Some(it.next().context("--out needs a file")?.into());
            }
            Some("-h" | "--help") => return Ok(None),
            _ => bail!("unexpected argument {arg:?}\n\n{USAGE}"),
        }
    }
    Ok(Some(args))
}

/// The workspace root: this crate lives in `host/witdoc`.
fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `path` relative to the workspace root when it is inside it, for messages.
fn shown(root: &Path, path: &Path) -> String {
    // The file itself may not exist yet; its folder usually does.
    let absolute = path.canonicalize().ok().or_else(|| {
        let dir = path.parent()?;
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Some(dir.canonicalize().ok()?.join(path.file_name()?))
    });
    absolute
        .as_deref()
        .and_then(|p| p.strip_prefix(root).ok())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn run() -> anyhow::Result<ExitCode> {
    let Some(args) = parse_args()? else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let root = workspace_root();
    let mut shown_args = Vec::new();
    if let Some(wit) = &args.wit {
        shown_args.push(format!("--wit {}", wit.display()));
    }
    if let Some(out) = &args.out {
        shown_args.push(format!("--out {}", out.display()));
    }
    let wit = args.wit.unwrap_or_else(|| root.join(DEFAULT_WIT_DIR));
    let out = args.out.unwrap_or_else(|| root.join(DEFAULT_OUT));

    let page = render(&wit)?;
    let current = match fs::read_to_string(&out) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", out.display())),
    };
    let out_shown = shown(&root, &out);

    if args.check {
        if current.as_deref() == Some(page.as_str()) {
            println!("{out_shown} is up to date");
            return Ok(ExitCode::SUCCESS);
        }
        // Name the WIT file(s) the page is generated from, e.g. `wit/plugin.wit`.
        let sources: Vec<String> = wit_files(&wit)?.iter().map(|f| shown(&root, f)).collect();
        let sources = sources.join(", ");
        let message = if shown_args.is_empty() {
            stale_message(&out_shown, &sources)
        } else {
            // The plain command writes the default page: name the paths given.
            let args = shown_args.join(" ");
            format!("{out_shown} is out of date with {sources}; run `{FIX_COMMAND} -- {args}`")
        };
        eprintln!("{message}");
        return Ok(ExitCode::from(1));
    }

    if current.as_deref() == Some(page.as_str()) {
        println!("{out_shown} is up to date");
    } else {
        if let Some(dir) = out.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        fs::write(&out, &page).with_context(|| format!("cannot write {}", out.display()))?;
        println!("wrote {out_shown}");
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
