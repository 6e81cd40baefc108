//! The `lifeboat` command.
//!
//! Exit codes: 0 success; 1 a run or a plugin failed; 2 invalid input
//! (command line, workflow file, plan file).

mod demo;
mod doctor;
mod harness;
mod load;
mod lockfile;
mod progress;
mod scaffold;
mod scaffold_langs;
mod vault;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand, ValueEnum};
use indexmap::IndexMap;
use lifeboat_plan::Plan;
use tracing::Instrument;

use crate::load::{Failure, Loaded};

/// Exit code: a run or a plugin failed.
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit code: the input (command line, workflow, plan file) is invalid.
const EXIT_INVALID: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "lifeboat",
    version,
    about = "Disaster-recovery workflows run by sandboxed WebAssembly plugins"
)]
#[command(
    after_help = "Exit codes: 0 success, 1 a run or plugin failed, 2 invalid input.\nLogs: -v, -vv or RUST_LOG=lifeboat=debug."
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Where runs keep their plan and journal.
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_STATE_DIR",
        default_value = ".lifeboat"
    )]
    state_dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a workflow file and its plugins; print every problem found.
    Validate {
        /// The workflow file.
        file: PathBuf,
    },
    /// Show exactly what a run would do, without changing anything.
    Plan {
        /// The workflow file.
        file: PathBuf,
        #[command(flatten)]
        inputs: InputArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also save the plan as JSON, for `lifeboat apply`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Apply a saved plan; refuses if the workflow or a plugin changed since.
    Apply {
        /// A plan saved with `lifeboat plan --out`.
        plan: PathBuf,
        /// The workflow file (default: the path recorded in the plan).
        #[arg(long)]
        workflow: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Plan and apply a workflow.
    Run {
        /// The workflow file.
        file: PathBuf,
        #[command(flatten)]
        inputs: InputArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Continue an interrupted or failed run without redoing finished actions.
    Resume {
        /// The run to continue (default: the latest unfinished one).
        run_id: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Bundled plugins and plugin files.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Print the JSON Schema of workflow files (for editors).
    Schema,
    /// Check this machine for what workflows and plugin builds need; prints what to install.
    Doctor,
    /// The vault of recovery points: init, ship, points, restore, check, prune.
    #[command(subcommand)]
    Vault(vault::VaultCommand),
    /// A recovery lab on this machine: demo sites, vault and key (`init`), guest writes (`change`).
    #[command(subcommand)]
    Demo(demo::DemoCommand),
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// List the plugins bundled with this lifeboat.
    List,
    /// Describe a plugin: a .wasm file or `builtin:NAME`.
    Inspect {
        /// A component file or `builtin:NAME`.
        plugin: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Pin a workflow's plugins by content digest in NAME.lock next to it; plan and
    /// run then refuse a plugin that changed.
    Lock {
        /// The workflow file.
        file: PathBuf,
    },
    /// Make a plugin project: one step with plan and apply, test cases, a README.
    New {
        /// The plugin's name (lowercase, digits, dashes), also its folder.
        name: String,
        /// The language of the project.
        #[arg(long, value_enum, default_value_t = scaffold::Lang::Rust)]
        lang: scaffold::Lang,
        /// Where to make the project folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build a plugin project into a component (target/plugin.wasm).
    Build {
        /// The project folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run a plugin's test cases with the local harness (no cloud, no vault) and
    /// compare them with their snapshots.
    Test {
        /// A plugin project (built first), a component file or `builtin:NAME`.
        #[arg(default_value = ".")]
        plugin: String,
        /// The folder of case files (default: the project's or the file's `tests/`).
        #[arg(long)]
        cases: Option<PathBuf>,
        /// Write the results as the new snapshots.
        #[arg(long, conflicts_with = "review")]
        accept: bool,
        /// Show the snapshots that differ (left as `.snap.new`) without running.
        #[arg(long)]
        review: bool,
    },
}

#[derive(clap::Args, Debug, Default)]
struct InputArgs {
    /// A workflow input, NAME=VALUE (repeatable).
    #[arg(short, long = "input", value_name = "NAME=VALUE")]
    input: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Most steps applied at once.
    #[arg(short, long, default_value_t = 4)]
    jobs: usize,
    /// Print the result as JSON on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // the harness records plugin logs into its snapshots: keep them off stderr
    let quiet = matches!(cli.command, Command::Plugin(PluginCommand::Test { .. }));
    init_tracing(cli.verbose, quiet);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Invalid(msg)) => {
            eprint!("{msg}");
            if !msg.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(EXIT_INVALID)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if quiet => "error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

async fn dispatch(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Validate { file } => {
            let loaded = Loaded::load(&file).await?;
            println!(
                "{}: ok ({} steps, {} plugins)",
                file.display(),
                loaded.workflow.steps.len(),
                loaded.workflow.plugins.len()
            );
            Ok(0)
        }
        Command::Plan {
            file,
            inputs,
            format,
            out,
        } => {
            let mut loaded = Loaded::load(&file).await?;
            let plan = loaded.plan(&file, &parse_inputs(&inputs)?).await?;
            if let Some(out) = &out {
                std::fs::write(out, plan.to_json())
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
            match format {
                Format::Text => print!("{}", lifeboat_plan::render_text(&plan)),
                Format::Json => print!("{}", plan.to_json()),
            }
            Ok(0)
        }
        Command::Run { file, inputs, run } => {
            let mut loaded = Loaded::load(&file).await?;
            let plan = loaded.plan(&file, &parse_inputs(&inputs)?).await?;
            if run.format == Format::Text {
                print!("{}", lifeboat_plan::render_text(&plan));
                println!();
            }
            let run_dir = new_run_dir(&cli.state_dir, &file, &plan)?;
            execute(&loaded, &plan, &run_dir, &run).await
        }
        Command::Apply {
            plan,
            workflow,
            run,
        } => {
            let text = std::fs::read_to_string(&plan).map_err(|e| {
                Failure::Invalid(format!("error: cannot read plan {}: {e}", plan.display()))
            })?;
            let p = Plan::from_json(&text)
                .map_err(|e| Failure::Invalid(format!("error: {}: {e}", plan.display())))?;
            let file = workflow.unwrap_or_else(|| PathBuf::from(&p.workflow.file));
            let mut loaded = Loaded::load(&file).await?;
            loaded.check_plan(&p)?;
            let run_dir = new_run_dir(&cli.state_dir, &file, &p)?;
            execute(&loaded, &p, &run_dir, &run).await
        }
        Command::Resume { run_id, run } => {
            let run_dir = find_run(&cli.state_dir, run_id.as_deref())?;
            let meta: RunMeta = serde_json::from_str(
                &std::fs::read_to_string(run_dir.join("run.json")).with_context(|| {
                    format!("cannot read {}", run_dir.join("run.json").display())
                })?,
            )
            .with_context(|| format!("{} is damaged", run_dir.join("run.json").display()))?;
            let text = std::fs::read_to_string(run_dir.join("plan.json"))
                .with_context(|| format!("cannot read {}", run_dir.join("plan.json").display()))?;
            let p = Plan::from_json(&text).map_err(|e| Failure::Invalid(format!("error: {e}")))?;
            let mut loaded = Loaded::load(&meta.workflow).await?;
            loaded.check_plan(&p)?;
            eprintln!("resuming run {}", meta.run_id);
            execute(&loaded, &p, &run_dir, &run).await
        }
        Command::Plugin(PluginCommand::List) => {
            let rt = load::runtime()?;
            for b in lifeboat_bundled::ALL {
                let p = rt
                    .load(b.name, b.wasm)
                    .await
                    .map_err(|e| Failure::Failed(anyhow!("bundled plugin `{}`: {e}", b.name)))?;
                let info = p.info();
                let steps: Vec<&str> = info.steps.iter().map(|s| s.name.as_str()).collect();
                println!(
                    "builtin:{}  {} {}  steps: {}  — {}",
                    b.name,
                    info.name,
                    info.version,
                    steps.join(", "),
                    info.doc
                );
            }
            Ok(0)
        }
        Command::Plugin(PluginCommand::Inspect { plugin, format }) => {
            let rt = load::runtime()?;
            let (name, bytes) = load::plugin_bytes(&plugin, Path::new("."))?;
            let p = rt
                .load(&name, &bytes)
                .await
                .map_err(|e| Failure::Invalid(format!("error: {e}")))?;
            match format {
                Format::Json => {
                    let v = serde_json::json!({
                        "contract": format!("{}@{}", lifeboat_contract::WIT_PACKAGE, lifeboat_contract::WIT_VERSION),
                        "digest": p.digest(),
                        "info": p.info(),
                    });
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                }
                Format::Text => print!("{}", load::describe_text(&p)),
            }
            Ok(0)
        }
        Command::Plugin(PluginCommand::Lock { file }) => {
            let loaded = Loaded::load_unlocked(&file).await?;
            let (path, n) = lockfile::write(&file, &loaded.workflow, &loaded.plugins)?;
            println!(
                "locked {n} plugin(s) of {} in {}",
                file.display(),
                path.display()
            );
            Ok(0)
        }
        Command::Plugin(PluginCommand::New { name, lang, dir }) => {
            let d = scaffold::new(&name, lang, &dir)?;
            println!("made plugin project {} ({})", d.display(), lang.as_str());
            println!(
                "  next: cd {} && lifeboat plugin build && lifeboat plugin test",
                d.display()
            );
            Ok(0)
        }
        Command::Plugin(PluginCommand::Build { dir }) => {
            let out = scaffold::build(&dir)?;
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            let rt = load::runtime()?;
            let bytes = std::fs::read(&out)
                .map_err(|e| Failure::Failed(anyhow!("cannot read {}: {e}", out.display())))?;
            let p = rt
                .load(&out.display().to_string(), &bytes)
                .await
                .map_err(|e| Failure::Failed(anyhow!("the built component does not load: {e}")))?;
            println!(
                "built {} ({} bytes, plugin {} {}, contract {}@{})",
                out.display(),
                size,
                p.info().name,
                p.info().version,
                lifeboat_contract::WIT_PACKAGE,
                p.contract_version()
            );
            Ok(0)
        }
        Command::Plugin(PluginCommand::Test {
            plugin,
            cases,
            accept,
            review,
        }) => {
            let as_dir = Path::new(&plugin);
            let project = !plugin.starts_with("builtin:") && as_dir.is_dir();
            let tests = match (&cases, project) {
                (Some(c), _) => c.clone(),
                (None, true) => as_dir.join("tests"),
                (None, false) => Path::new(&plugin)
                    .parent()
                    .map(|p| p.join("tests"))
                    .unwrap_or_else(|| PathBuf::from("tests")),
            };
            if review {
                return harness::review(&tests);
            }
            let rt = load::runtime()?;
            let (name, bytes) = if project {
                let out = scaffold::build(as_dir)?;
                let bytes = std::fs::read(&out)
                    .map_err(|e| Failure::Failed(anyhow!("cannot read {}: {e}", out.display())))?;
                (scaffold::Manifest::read(as_dir)?.name, bytes)
            } else {
                load::plugin_bytes(&plugin, Path::new("."))?
            };
            let p = rt
                .load(&name, &bytes)
                .await
                .map_err(|e| Failure::Invalid(format!("error: {e}")))?;
            let mode = if accept {
                harness::SnapMode::Accept
            } else {
                harness::SnapMode::Check
            };
            harness::run_all(&rt, &p, &tests, mode).await
        }
        Command::Vault(cmd) => vault::run(cmd).await,
        Command::Demo(cmd) => demo::run(cmd).await,
        Command::Doctor => Ok(doctor::run()),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&lifeboat_workflow::json_schema()).unwrap_or_default()
            );
            Ok(0)
        }
    }
}

fn parse_inputs(args: &InputArgs) -> Result<IndexMap<String, String>, Failure> {
    let mut out = IndexMap::new();
    for a in &args.input {
        let Some((k, v)) = a.split_once('=') else {
            return Err(Failure::Invalid(format!(
                "error: `--input {a}` must be NAME=VALUE, e.g. `--input kind=test`"
            )));
        };
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// What a run directory remembers besides plan and journal.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunMeta {
    run_id: String,
    workflow: PathBuf,
}

fn new_run_dir(state: &Path, workflow: &Path, plan: &Plan) -> Result<PathBuf, Failure> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let run_id = format!("{secs}-{}-{}", plan.workflow.name, std::process::id());
    let dir = state.join("runs").join(&run_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let workflow = std::fs::canonicalize(workflow).unwrap_or_else(|_| workflow.to_path_buf());
    let meta = RunMeta {
        run_id: run_id.clone(),
        workflow,
    };
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(&meta).unwrap_or_default(),
    )
    .with_context(|| format!("cannot write {}", dir.display()))?;
    std::fs::write(dir.join("plan.json"), plan.to_json())
        .with_context(|| format!("cannot write {}", dir.display()))?;
    eprintln!("run {run_id} (state in {})", dir.display());
    Ok(dir)
}

/// The named run, or the newest one that did not finish successfully.
fn find_run(state: &Path, id: Option<&str>) -> Result<PathBuf, Failure> {
    let runs = state.join("runs");
    if let Some(id) = id {
        let d = runs.join(id);
        if d.is_dir() {
            return Ok(d);
        }
        return Err(Failure::Invalid(format!(
            "error: no run `{id}` in {}",
            runs.display()
        )));
    }
    let mut candidates: Vec<(u64, PathBuf)> = vec![];
    for e in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
        let path = e.path();
        let records =
            lifeboat_engine::Journal::read(&path.join("journal.jsonl")).unwrap_or_default();
        let finished_ok = records
            .iter()
            .any(|r| matches!(r, lifeboat_engine::Record::RunFinished { ok: true }));
        if finished_ok {
            continue;
        }
        let name = e.file_name().to_string_lossy().to_string();
        let secs = name
            .split('-')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        candidates.push((secs, path));
    }
    candidates.sort();
    candidates.pop().map(|(_, p)| p).ok_or_else(|| {
        Failure::Invalid(format!(
            "error: no unfinished run to resume in {}",
            runs.display()
        ))
    })
}

async fn execute(
    loaded: &Loaded,
    plan: &Plan,
    run_dir: &Path,
    args: &RunArgs,
) -> Result<u8, Failure> {
    let reporter = progress::Progress::new(plan);
    let calls = loaded.calls();
    let span =
        tracing::info_span!("run", workflow = %plan.workflow.name, run_dir = %run_dir.display());
    let report = lifeboat_engine::apply(lifeboat_engine::Apply {
        workflow: &loaded.workflow,
        plan,
        secrets: &loaded.secrets()?,
        step_infos: &loaded.step_infos(),
        calls: &calls,
        max_parallel: args.jobs,
        reporter: &reporter,
        journal: &run_dir.join("journal.jsonl"),
    })
    .instrument(span)
    .await
    .map_err(|e| match e {
        lifeboat_engine::EngineError::Mismatch(_) => Failure::Invalid(format!("error: {e}")),
        other => Failure::Failed(anyhow!(other)),
    })?;
    reporter.finish();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Text => print!("{}", progress::render_report(&report)),
    }
    Ok(if report.ok { 0 } else { EXIT_FAILED })
}
