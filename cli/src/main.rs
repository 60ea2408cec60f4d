//! `pinpipe`: the pipeline's core code, run locally (contract §6).

mod bench;
mod consume;
mod ingest;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use pinpipe_devtools::generate::{self, GenConfig};
use pinpipe_core::writer::{self, Tables};
use pinpipe_core::analysis::run;
use pinpipe_core::storage::Location;
use pinpipe_core::{Kind, PipelineId};

/// The main help's command list, grouped (clap lists commands in one block);
/// tests/test_cli.py keeps it in step with `Command`.
const COMMANDS: &str = "\
Pipeline (the Lambdas' work, on one machine):
  demo        Run the whole pipeline end to end on generated data
  clean       Clean a raw landing into the Delta tables, exactly once
  analyze     Compute the nine analysis outputs from the tables
  report      Re-render report.html, the CSVs and results.json of the last analysis
  invoke      Run one Lambda's handler on an event file

Operations:
  gaps        List (or close) the offsets a writer saw skipped
  replay      Re-drive batches the mappings gave up on, or the quarantine
  forget      Erase one person's posts everywhere pinpipe keeps them

Local stack:
  serve       The ingest API as a local HTTP server
  emulate     Send generated posts to the ingest API
  consume     Feed the sinks from a Kafka broker and/or Kinesis streams
  kafka-mock  Run librdkafka's mock Kafka cluster
  generate    Write a synthetic source database (pin, geo, user JSON Lines)

Development:
  bench       Benchmarks beside a reference measured in the same run
  help        Print this message or the help of the given command";

#[derive(Parser)]
#[command(
    name = "pinpipe",
    version,
    about = "Serverless Pinterest event pipeline, run locally: the same code as its AWS Lambdas",
    long_about = "pinpipe runs the same code as its AWS Lambdas on one machine.\n\n\
        Storage arguments take a local path or an s3:// URL (AWS_ENDPOINT_URL points at a local S3).\n\
        Quick start: `pinpipe demo` runs the whole pipeline on generated data.",
    help_template = "{about-with-newline}\n{usage-heading} {usage}\n\n{before-help}\nOptions:\n{options}{after-help}",
    before_help = COMMANDS,
    after_help = "`pinpipe <command> --help` describes a command. Exit status: 0 done, 1 failed \
        (the error is on stderr), 2 wrong usage.",
)]
struct Cli {
    /// Pipeline id: names topics (<ID>.pin), streams and tables (<ID>_pin_table).
    #[arg(long, global = true, env = "PINPIPE_ID", default_value = "demo")]
    id: String,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text", env = "PINPIPE_LOG_FORMAT")]
    log_format: ui::LogFormat,
    /// Print the command's result as JSON on stdout (one object; `gaps`: one per line) instead
    /// of text. Progress and warnings always go to stderr. `replay`, `forget` and `invoke`
    /// print JSON either way; `serve` and `kafka-mock` refuse it.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a synthetic source database: DIR/pin.jsonl, geo.jsonl, user.jsonl.
    Generate(GenerateArgs),
    /// Clean a raw landing (docs/contract.md §3) into Delta tables (§4), exactly once.
    Clean(CleanArgs),
    /// Compute the nine analysis outputs (docs/contract.md §5) from the cleaned tables.
    Analyze(AnalyzeArgs),
    /// Re-render report.html, the CSVs and results.json from the last analysis's output tables.
    Report(ReportArgs),
    /// Run seeded random delivery schedules (redeliveries, re-batched overlaps, holes and
    /// replays, crashes between commits, racing writers, catch-ups, compaction + vacuum) on real
    /// tables and check every record is kept exactly once; a failing seed replays with --seed.
    #[command(hide = true)]
    FaultSchedules(FaultSchedulesArgs),
    /// List the open gaps of the cleaned tables (offsets a writer saw skipped that no replay has
    /// filled yet), or close one that can never be filled (retention expired, compacted topic).
    Gaps(GapsArgs),
    /// Re-drive the MSK and Kinesis batches the event-source mappings gave up on (their S3
    /// failure destination) through the sinks' writer, exactly once (--from), or the quarantine's records
    /// through today's cleaning rules (--quarantine); --dry-run only says what it would do.
    Replay(ReplayArgs),
    /// Erase one person's posts (a privacy request): their pin, geo and user records leave the
    /// cleaned tables, the quarantine and the raw landing, and no writer tables them again.
    /// What it cannot reach (Kafka/Kinesis retention, logs, old versions) is listed in docs/operations.md.
    Forget(ForgetArgs),
    /// Run the whole pipeline end to end on generated data (no cloud account needed).
    Demo(DemoArgs),
    /// Run one Lambda's handler in-process on an event file, configured from the environment
    /// exactly as in AWS (PINPIPE_ID, PINPIPE_TABLES, ...), and print its JSON response.
    Invoke(InvokeArgs),
    /// Benchmarks that print pinpipe's figure beside a reference measured in the same run.
    Bench(bench::BenchArgs),
    /// The ingest API (Kafka REST proxy + Kinesis proxy routes) as a local HTTP server.
    Serve(ingest::ServeArgs),
    /// The user-posting emulator: sends posts' pin, geo and user records to the ingest API.
    Emulate(ingest::EmulateArgs),
    /// Feed the sink handlers from a real Kafka broker and/or Kinesis streams (as Lambda's
    /// event-source mappings do), moving the position only after the sink succeeded.
    Consume(ingest::ConsumeArgs),
    /// Run librdkafka's mock Kafka cluster (topics <ID>.pin|geo|user); prints its bootstrap address;
    /// SIGUSR1 / SIGUSR2 take its brokers down / up (outage drills). It keeps only the newest
    /// 5 MB (compressed) per partition: run a consumer alongside long emulations.
    KafkaMock(ingest::KafkaMockArgs),
}

#[derive(Args)]
struct GenerateArgs {
    /// Distinct posts to generate.
    #[arg(long = "posts", visible_alias = "rows", value_name = "N")]
    rows: u64,
    /// Random seed: the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of extra re-posts of earlier posts (0.1 adds rows/10 re-posts).
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct CleanArgs {
    /// Landing root (local directory or s3://bucket/prefix) holding topics/…, kinesis/… or
    /// *.jsonl files.
    #[arg(long, visible_alias = "input", env = "PINPIPE_LANDING")]
    landing: String,
    /// Root of the Delta tables (created when absent).
    #[arg(long, visible_alias = "output", env = "PINPIPE_TABLES")]
    tables: String,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// Root of the Delta tables.
    #[arg(long, env = "PINPIPE_TABLES")]
    tables: String,
    /// Directory for the CSV files and results.json (local or s3://).
    #[arg(long)]
    out: String,
}

#[derive(Args)]
struct ReportArgs {
    /// Root of the Delta tables (holding the <ID>_<output> tables of the last run).
    #[arg(long, env = "PINPIPE_TABLES")]
    tables: String,
    /// Directory for report.html, the CSV files and results.json (local or s3://).
    #[arg(long)]
    out: String,
}

#[derive(Args)]
struct FaultSchedulesArgs {
    /// How many schedules (seeds 0..N).
    #[arg(long, default_value_t = 1000)]
    schedules: u64,
    /// Run only this seed (to replay a failure).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the schedules' tables and landings go: a local folder or s3://bucket/prefix
    /// (default: a new folder under the system temp dir).
    #[arg(long)]
    root: Option<String>,
    /// Keep every schedule's tables, with expected.json (the rows and quarantine entries they
    /// must hold) beside them, for a check by an independent reader.
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["from", "quarantine"])))]
struct ReplayArgs {
    /// Root of the Delta tables.
    #[arg(long, env = "PINPIPE_TABLES")]
    tables: String,
    /// The raw landing the Kafka sink writes (replayed MSK records are landed too); needed with --from.
    #[arg(long, env = "PINPIPE_LANDING")]
    landing: Option<String>,
    /// Where the failed batches are: the failure bucket (s3://BUCKET/aws/lambda/...) or a folder.
    #[arg(long)]
    from: Option<String>,
    /// Re-drive the quarantine's records through today's cleaning rules (after a fix to them):
    /// those that now clean are tabled once and leave the quarantine; the rest stay.
    #[arg(long)]
    quarantine: bool,
    /// With --quarantine: only entries whose reason contains this text.
    #[arg(long, requires = "quarantine")]
    reason: Option<String>,
    /// Only count what a replay would table and what the tables already hold.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("whom").required(true).args(["ind", "user"])))]
struct ForgetArgs {
    /// A post to forget (repeat for several).
    #[arg(long)]
    ind: Vec<i64>,
    /// A user's name as the user table holds it ("First Last"): every post whose user record
    /// has it is forgotten.
    #[arg(long)]
    user: Option<String>,
    /// Root of the Delta tables.
    #[arg(long, env = "PINPIPE_TABLES")]
    tables: String,
    /// The raw landing: its lines of these posts are blanked (without it, the landing keeps
    /// them and only row counts in results.json are corrected).
    #[arg(long, env = "PINPIPE_LANDING")]
    landing: Option<String>,
    /// Only count what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Milliseconds to wait after a pass before the next, until one finds nothing left: at
    /// least the longest run of a function that writes the tables (the sinks' 300 s, the
    /// scheduled catch-up's 900 s). 0: one pass, and the output says it is not yet certain.
    #[arg(long, default_value_t = 900_000, value_name = "MS")]
    settle_ms: u64,
    /// The same in seconds (kept for older scripts).
    #[arg(long, hide = true)]
    settle: Option<f64>,
}

#[derive(Args)]
struct GapsArgs {
    /// Root of the Delta tables.
    #[arg(long, env = "PINPIPE_TABLES")]
    tables: String,
    /// Close one gap, as listed: TABLE SOURCE FIRST LAST (for example
    /// `demo_pin_table demo.pin-0 120 179`). Its offsets then count as written, and a late
    /// delivery of them is skipped. Without it, only lists.
    #[arg(long, num_args = 4, value_names = ["TABLE", "SOURCE", "FIRST", "LAST"])]
    close: Option<Vec<String>>,
}

#[derive(Args)]
struct InvokeArgs {
    /// The function whose handler runs.
    #[arg(value_enum)]
    function: Function,
    /// The event JSON file (samples in events/). Repeated (`--event a.json --event b.json`),
    /// they run one after another in the same warm container, each response on its own line.
    #[arg(long, required = true)]
    event: Vec<PathBuf>,
}

/// Lambdas that `invoke` can run.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Function {
    IngestApi,
    KafkaSink,
    KinesisSink,
    BatchAnalysis,
}

#[derive(Args)]
struct DemoArgs {
    /// Posts to generate.
    #[arg(long = "posts", visible_alias = "rows", value_name = "N", default_value_t = 100_000)]
    rows: u64,
    /// Fraction of re-posts, as real producers send.
    #[arg(long, default_value_t = 0.05)]
    duplicates: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Working directory (landing/, tables/, out/); replaced on each run. A directory
    /// `pinpipe demo` did not make is refused, never emptied.
    #[arg(long, default_value = "pinpipe-demo")]
    dir: PathBuf,
}

fn main() -> ExitCode {
    // Exit quietly when stdout is closed early (`pinpipe … | head`), as Unix tools do.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let (cli, id_given) = parse_args();
    ui::init_logging(cli.log_format);
    pinpipe_ingest::install_tls_provider();
    // EMF metric lines, as the Lambdas write them (`pinpipe invoke`): PINPIPE_METRICS=emf.
    pinpipe_core::metrics::configure(pinpipe_core::metrics::setting(
        std::env::var("PINPIPE_METRICS").ok().as_deref(),
        std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
    ));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(dispatch(cli, id_given)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    };
    bench::write_peak_rss();
    code
}

/// The command line, refusing a global flag the command would ignore (exit 2, as any other
/// usage error): `--id` names nothing `generate` or `fault-schedules` writes, and `serve` and
/// `kafka-mock` (servers) print no JSON.
/// Also says whether the pipeline id was given (flag or PINPIPE_ID) rather than defaulted.
fn parse_args() -> (Cli, bool) {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let matches = command.clone().get_matches();
    let id_given = [Some(&matches), matches.subcommand().map(|(_, m)| m)]
        .into_iter()
        .flatten()
        .any(|m| matches!(m.value_source("id"), Some(ValueSource::CommandLine | ValueSource::EnvVariable)));
    if let Some((name, sub)) = matches.subcommand() {
        let given = |m: &clap::ArgMatches| m.value_source("id") == Some(ValueSource::CommandLine);
        if ["generate", "fault-schedules"].contains(&name) && (given(&matches) || given(sub)) {
            command
                .error(clap::error::ErrorKind::ArgumentConflict, format!("--id is not used by `{name}`: leave it out"))
                .exit();
        }
        if ["serve", "kafka-mock"].contains(&name) && (matches.get_flag("json") || sub.get_flag("json")) {
            command
                .error(clap::error::ErrorKind::ArgumentConflict, format!("`{name}` has no JSON output: leave out --json"))
                .exit();
        }
    }
    (Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()), id_given)
}

/// The error chain on one line, each cause once: many library errors already embed their
/// source in their message, which `{:#}` would repeat.
fn one_line(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let msg = cause.to_string().replace('\n', " ");
        if text.contains(msg.as_str()) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&msg);
    }
    text
}

async fn dispatch(cli: Cli, id_given: bool) -> Result<()> {
    let id = PipelineId::new(&cli.id)?;
    let json = cli.json;
    match cli.command {
        Command::Generate(a) => cmd_generate(a, json),
        Command::Clean(a) => cmd_clean(&id, a, json).await,
        Command::Analyze(a) => cmd_analyze(&id, a, json).await,
        Command::Report(a) => cmd_report(&id, a, json).await,
        Command::Gaps(a) => cmd_gaps(&id, a, json).await,
        Command::Replay(a) => cmd_replay(&id, a).await,
        Command::Forget(a) => cmd_forget(&id, a).await,
        Command::FaultSchedules(a) => cmd_fault_schedules(a, json).await,
        Command::Demo(a) => cmd_demo(&id, a, json).await,
        Command::Invoke(a) => cmd_invoke(id_given.then_some(&id), a).await,
        Command::Bench(a) => bench::run(&id, a, json).await,
        Command::Serve(a) => ingest::serve(&id, a).await,
        Command::Emulate(a) => {
            let report = ingest::emulate(&id, a).await?;
            if json {
                report.print_json();
            } else {
                report.print();
            }
            anyhow::ensure!(
                report.refused == 0 && report.given_up == 0,
                "{} records were refused and {} not stored after retries (see the log above)",
                report.refused,
                report.given_up
            );
            Ok(())
        }
        Command::Consume(a) => ingest::consume(&id, a, json).await,
        Command::KafkaMock(a) => ingest::kafka_mock(&id, a).await,
    }
}

fn cmd_generate(a: GenerateArgs, json: bool) -> Result<()> {
    anyhow::ensure!(
        (0.0..=10.0).contains(&a.duplicates),
        "--duplicates {} must be between 0 and 10",
        a.duplicates
    );
    let cfg = GenConfig { posts: a.rows, seed: a.seed, duplicates: a.duplicates };
    let bar = ui::bar(cfg.total_rows(), "generating posts");
    generate::generate_to_dir(&cfg, &a.out, &|n| bar.set_position(n))
        .with_context(|| format!("generating into {}", a.out.display()))?;
    bar.finish_and_clear();
    if json {
        let files: Vec<String> = ["pin", "geo", "user"].iter().map(|k| a.out.join(format!("{k}.jsonl")).display().to_string()).collect();
        println!("{}", serde_json::json!({"posts": cfg.posts, "reposts": cfg.reposts(), "out": a.out, "files": files}));
    } else {
        println!(
            "generated {} posts ({} re-posts) into {}: pin.jsonl, geo.jsonl, user.jsonl",
            cfg.posts,
            cfg.reposts(),
            a.out.display()
        );
    }
    Ok(())
}

/// Cleans `input` into `output`; shared by `clean` and `demo`.
async fn clean(id: &PipelineId, input: &Location, output: &Location) -> Result<writer::CleanReport> {
    let mut tables = Tables::open(output, id).await?;
    let bar = ui::bytes_bar("cleaning landing");
    let report = writer::clean_landing(input, &mut tables, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await?;
    bar.finish_and_clear();
    Ok(report)
}

async fn cmd_clean(id: &PipelineId, a: CleanArgs, json: bool) -> Result<()> {
    keep_freed_memory();
    let input = Location::parse_existing(&a.landing)?;
    let output = Location::parse(&a.tables)?;
    let report = clean(id, &input, &output).await?;
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["total"] = serde_json::to_value(report.total())?;
        v["tables"] = output.display().into();
        println!("{v}");
        ui::clean_warnings(&report);
    } else {
        ui::print_clean(&report, &output, &id.quarantine_table());
    }
    Ok(())
}

/// Batch cleaning frees and reallocates buffers of tens of MB per chunk; glibc returns those
/// to the kernel at once (mmap'd above 32 MB), and faulting them back in cost ~1.3 s of system
/// time at 1M posts. Keeping them (threshold 256 MB, trim at 1 GB) halved it: measured 5.35 s
/// → 4.9–5.1 s wall, peak RSS +50–100 MB. Not used for analysis, where it only raised RSS.
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before the heavy work starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

async fn analyze(id: &PipelineId, tables: &Location, out: &Location) -> Result<run::AnalysisRun> {
    let spinner = ui::spinner("analyzing");
    // The one setting the CLI takes from the environment alone (it has no flag).
    let part_rows = run::parse_part_rows(std::env::var("PINPIPE_ANALYSIS_PART_ROWS").ok().as_deref())?;
    let run = run::analyze(tables, id, chrono::Utc::now(), part_rows).await?;
    run.write_tables(tables).await?;
    run.write_files(out).await?;
    spinner.finish_and_clear();
    Ok(run)
}

/// Commands that read stop here on a root without this pipeline's tables, before anything
/// could create one: a mistyped --id or --tables must not leave empty tables in a bucket.
async fn require_tables(root: &Location, id: &PipelineId) -> Result<()> {
    for name in Kind::ALL.iter().map(|k| id.table(*k)).chain([id.quarantine_table()]) {
        if pinpipe_core::delta::exists(root, &name).await? {
            return Ok(());
        }
    }
    anyhow::bail!(
        "no pinpipe tables for id '{}' under {}; pass --id (or check --tables, or run `pinpipe clean` or the sinks first)",
        id.as_str(),
        root.display()
    )
}

async fn cmd_analyze(id: &PipelineId, a: AnalyzeArgs, json: bool) -> Result<()> {
    let tables = Location::parse_existing(&a.tables)?;
    require_tables(&tables, id).await?;
    let out = Location::parse(&a.out)?;
    let run = analyze(id, &tables, &out).await?;
    if json {
        println!("{}", ui::results_json(&run, &tables, &out)?);
    } else {
        ui::print_results(&run, &tables, &out);
    }
    Ok(())
}

async fn cmd_fault_schedules(a: FaultSchedulesArgs, json: bool) -> Result<()> {
    use pinpipe_devtools::fault_schedules;
    let root = a.root.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pinpipe-fault-schedules-{}", std::process::id())).display().to_string()
    });
    let seeds: Vec<u64> = match a.seed {
        Some(s) => vec![s],
        None => (0..a.schedules).collect(),
    };
    let total = seeds.len();
    let spinner = ui::spinner("running fault schedules");
    let results = fault_schedules::run_schedules(seeds, &root, a.keep).await?;
    spinner.finish_and_clear();
    let mut failed = Vec::new();
    for (seed, r) in &results {
        if let Err(why) = r {
            eprintln!("seed {seed} failed (replay: pinpipe fault-schedules --seed {seed}): {why}");
            failed.push(*seed);
        }
    }
    if json {
        println!("{}", serde_json::json!({"ok": total - failed.len(), "failed": failed, "root": root}));
    } else {
        println!("fault schedules: {} ok, {} failed, under {root}", total - failed.len(), failed.len());
    }
    anyhow::ensure!(failed.is_empty(), "failing seeds: {failed:?}");
    Ok(())
}

async fn cmd_replay(id: &PipelineId, a: ReplayArgs) -> Result<()> {
    let Some(from) = a.from else {
        let tables = Location::parse_existing(&a.tables)?;
        require_tables(&tables, id).await?;
        let report = pinpipe_core::jobs::replay::replay_quarantine(&tables, id, a.reason.as_deref(), a.dry_run).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    };
    let landing = a.landing.context(
        "--from needs the landing the Kafka sink writes (--landing or PINPIPE_LANDING): replayed batches are landed too",
    )?;
    let cfg = pinpipe_core::jobs::config::Config {
        landing: Some(Location::parse(&landing)?),
        ..pinpipe_core::jobs::config::Config::new(id.clone(), Location::parse(&a.tables)?)
    };
    let from = Location::parse_existing(&from)?;
    if a.dry_run {
        // A real replay may be the first write to new tables; a dry run only reads.
        require_tables(&cfg.tables, id).await?;
    }
    let report = pinpipe_core::jobs::replay::replay_from(&cfg, &from, a.dry_run).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn cmd_forget(id: &PipelineId, a: ForgetArgs) -> Result<()> {
    use pinpipe_core::jobs::forget::{self, Target};
    let tables = Location::parse_existing(&a.tables)?;
    // Also for a real forget: it writes its ledger at this root, which must be the pipeline's.
    require_tables(&tables, id).await?;
    let landing = a.landing.as_deref().map(Location::parse_existing).transpose()?;
    let target = match a.user {
        Some(name) => Target::User(name),
        None => Target::Inds(a.ind),
    };
    let spinner = ui::spinner("forgetting");
    let settle = match a.settle {
        Some(secs) => std::time::Duration::try_from_secs_f64(secs.max(0.0)).context("--settle is not a number of seconds")?,
        None => std::time::Duration::from_millis(a.settle_ms),
    };
    if !a.dry_run && !settle.is_zero() {
        spinner.set_message(format!("forgetting (then again after {} s, until a pass finds nothing)", settle.as_secs()));
    }
    let report = forget::forget_settled(&tables, id, &target, landing.as_ref(), a.dry_run, settle, 5).await?;
    spinner.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.inds.is_empty() {
        eprintln!("nothing (left) to forget: check --id, --tables and the spelling of --user");
    } else if !a.dry_run && !report.certain {
        eprintln!(
            "not yet certain: a sink that read the ledger just before this forget may still commit rows of these \
             posts. Run the same forget again after the functions' timeout (900 s), or use --settle-ms 900000."
        );
    }
    if !report.inds.is_empty() && !a.dry_run {
        eprintln!(
            "forgotten. The replaced table files stay for readers of older table versions until the daily \
             maintenance's vacuum deletes them (PINPIPE_VACUUM_RETENTION_HOURS, {} h by default); \
             README \"Forgetting a user\" lists what else still holds them, and for how long.",
            pinpipe_core::jobs::maintenance::MaintenanceConfig::default().vacuum_retention_hours
        );
    }
    Ok(())
}

async fn cmd_gaps(id: &PipelineId, a: GapsArgs, json: bool) -> Result<()> {
    let root = Location::parse_existing(&a.tables)?;
    require_tables(&root, id).await?;
    let mut tables = Tables::open(&root, id).await?;
    if let Some(close) = a.close {
        let [table, source, first, last] = close.as_slice() else { anyhow::bail!("--close takes TABLE SOURCE FIRST LAST") };
        let kind = Kind::ALL
            .into_iter()
            .find(|k| id.table(*k) == *table)
            .with_context(|| format!("{table} is not one of this pipeline's cleaned tables (check --id)"))?;
        let gap: (i64, i64) = (
            first.parse().with_context(|| format!("FIRST {first:?} is not an offset"))?,
            last.parse().with_context(|| format!("LAST {last:?} is not an offset"))?,
        );
        anyhow::ensure!(
            tables.close_gap(kind, source, gap).await?,
            "no open gap {source} {first}-{last} in {table}: `pinpipe gaps` lists the open ones"
        );
        if json {
            println!("{}", serde_json::json!({"closed": {"table": table, "source": source, "first": gap.0, "last": gap.1}}));
        } else {
            println!("closed gap {source} {first}-{last} in {table}");
        }
        return Ok(());
    }
    let gaps = tables.open_gaps().await?;
    for (table, source, (first, last)) in &gaps {
        if json {
            println!("{}", serde_json::json!({"table": table, "source": source, "first": first, "last": last}));
        } else {
            println!("{table} {source} {first} {last}  ({} offsets)", last - first + 1);
        }
    }
    if !json {
        println!("{} open gap(s)", gaps.len());
    }
    Ok(())
}

async fn cmd_invoke(id: Option<&PipelineId>, a: InvokeArgs) -> Result<()> {
    // As in AWS, from the environment; --id (or PINPIPE_ID) names the pipeline, and without
    // either the handler fails as a Lambda without PINPIPE_ID would.
    let lookup = |k: &str| match k {
        "PINPIPE_ID" => id.map(|id| id.as_str().to_string()),
        other => std::env::var(other).ok().filter(|v| !v.is_empty()),
    };
    let sink_config = || pinpipe_core::jobs::config::Config::from_lookup(lookup);
    // One container for every event: clients are made once, as Lambda reuses a warm one.
    enum Handler {
        Ingest(Box<pinpipe_ingest::Ingest>),
        Kafka(Box<pinpipe_core::jobs::handlers::KafkaSink>),
        Kinesis(Box<pinpipe_core::jobs::handlers::KinesisSink>),
        Analysis(Box<pinpipe_core::jobs::config::Config>),
    }
    let mut handler = match a.function {
        Function::IngestApi => Handler::Ingest(Box::new(pinpipe_ingest::Ingest::new(pinpipe_ingest::IngestConfig::from_lookup(lookup)?).await?)),
        Function::KafkaSink => Handler::Kafka(Box::new(pinpipe_core::jobs::handlers::KafkaSink::open(&sink_config()?).await?)),
        Function::KinesisSink => Handler::Kinesis(Box::new(pinpipe_core::jobs::handlers::KinesisSink::open(&sink_config()?).await?)),
        Function::BatchAnalysis => Handler::Analysis(Box::new(sink_config()?)),
    };
    for path in &a.event {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading event {}", path.display()))?;
        let not_a = |what: &str| format!("{} is not {what}", path.display());
        let response = match &mut handler {
            Handler::Ingest(ingest) => {
                let event: serde_json::Value = serde_json::from_str(&text).with_context(|| not_a("JSON"))?;
                ingest.handle_lambda_event(&event).await.map_err(|e| anyhow::anyhow!("{}: {e}", not_a("an API Gateway or CloudFormation custom-resource event")))?
            }
            Handler::Kafka(sink) => {
                let event = serde_json::from_str(&text).with_context(|| not_a("an MSK (Kafka) event"))?;
                serde_json::to_value(sink.handle(event).await?)?
            }
            Handler::Kinesis(sink) => {
                let event = serde_json::from_str(&text).with_context(|| not_a("a Kinesis event"))?;
                serde_json::to_value(sink.handle(event).await?)?
            }
            Handler::Analysis(cfg) => {
                let event: serde_json::Value = serde_json::from_str(&text).with_context(|| not_a("JSON"))?;
                if pinpipe_core::jobs::handlers::is_step_request(&event) {
                    let step = serde_json::from_value(event).with_context(|| not_a("a step request ({\"step\", \"time\"})"))?;
                    serde_json::to_value(pinpipe_core::jobs::handlers::batch_analysis_step(cfg, step).await?)?
                } else {
                    let event = serde_json::from_value(event).with_context(|| not_a("an EventBridge event"))?;
                    serde_json::to_value(pinpipe_core::jobs::handlers::batch_analysis(cfg, event).await?)?
                }
            }
        };
        if a.event.len() == 1 {
            println!("{}", serde_json::to_string_pretty(&response)?);
        } else {
            println!("{}", serde_json::to_string(&response)?);
        }
    }
    Ok(())
}

async fn cmd_report(id: &PipelineId, a: ReportArgs, json: bool) -> Result<()> {
    let tables = Location::parse_existing(&a.tables)?;
    let out = Location::parse(&a.out)?;
    let run = run::load_last(&tables, id).await?;
    let written = run.write_files(&out).await?;
    if json {
        println!("{}", serde_json::json!({"run_time": run::fmt_time(&run.run_time), "out": out.display(), "written": written}));
    } else {
        println!("re-rendered the run of {} into {}: {}", run::fmt_time(&run.run_time), out.display(), written.join(", "));
    }
    Ok(())
}

/// The whole pipeline on one machine, through the production handlers: generated posts are
/// posted to the ingest API handler, which produces them to librdkafka's mock cluster (a
/// Kafka-protocol broker inside this process); the Kafka sink handler consumes them in
/// MSK-shaped batches into the landing and the tables; the analysis job's catch-up finds
/// nothing left to add; the analysis writes the outputs.
async fn cmd_demo(id: &PipelineId, a: DemoArgs, json: bool) -> Result<()> {
    // With --json the steps go to stderr and stdout holds only the summary.
    macro_rules! step {
        ($($t:tt)*) => { if json { eprintln!($($t)*) } else { println!($($t)*) } };
    }
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let started = std::time::Instant::now();
    let dir = ui::fresh_demo_dir(&a.dir)?;
    let landing = Location::parse(&dir.join("landing").display().to_string())?;
    let tables = Location::parse(&dir.join("tables").display().to_string())?;
    let out = Location::parse(&dir.join("out").display().to_string())?;
    let cfg = GenConfig { posts: a.rows, seed: a.seed, duplicates: a.duplicates };
    step!("pinpipe demo (id {}): {} posts + {} re-posts", id.as_str(), cfg.posts, cfg.reposts());

    let mock = rdkafka::mocking::MockCluster::new(1).context("starting the in-process Kafka broker")?;
    for kind in pinpipe_core::Kind::ALL {
        mock.create_topic(&id.topic(kind), 1, 1).context("creating the demo topics")?;
    }
    let bootstrap = mock.bootstrap_servers();
    let ingest_cfg = pinpipe_ingest::IngestConfig {
        kafka_brokers: Some(bootstrap.clone()),
        kinesis: false,
        ..pinpipe_ingest::IngestConfig::new(id.clone())
    };
    let api = pinpipe_ingest::Ingest::new(ingest_cfg).await?;
    let sink_cfg =
        pinpipe_core::jobs::config::Config { landing: Some(landing.clone()), ..pinpipe_core::jobs::config::Config::new(id.clone(), tables.clone()) };
    let mut sink = pinpipe_core::jobs::handlers::KafkaSink::open(&sink_cfg).await?;
    // Posting and sinking run at once, as in production. The in-process broker keeps only the
    // newest 5 MB (compressed) of each partition, so posting waits while the sink is behind:
    // at most LAG_RECORDS + one chunk (about 10,000 per topic) unread.
    let total = cfg.total_rows() * 3;
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let opts = crate::consume::ConsumeOptions {
        stop_after: Some(total),
        idle_exit: Some(std::time::Duration::from_secs(60)),
        received: Some(received.clone()),
        ..Default::default()
    };
    let bar = ui::bar(cfg.total_rows(), "1-2/4 ingest API -> Kafka -> sink");
    let posting = async {
        const CHUNK_POSTS: u64 = 2_000;
        const LAG_RECORDS: u64 = 24_000;
        let mut sent = 0u64;
        let mut from = 0u64;
        while from < cfg.total_rows() {
            let to = (from + CHUNK_POSTS).min(cfg.total_rows());
            while sent.saturating_sub(received.load(std::sync::atomic::Ordering::Relaxed)) > LAG_RECORDS {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            sent += ingest::post_generated_range(&api, id, &cfg, from, to, 500, 4, &|n| bar.inc(n)).await?;
            from = to;
        }
        anyhow::Ok(sent)
    };
    let sinking = crate::consume::consume_kafka(&bootstrap, id, &mut sink, &opts, Arc::new(AtomicBool::new(false)));
    let (sent, r) = tokio::join!(posting, sinking);
    let (sent, r) = (sent?, r?);
    bar.finish_and_clear();
    step!("1/4 ingest API: {sent} records accepted (200) and produced to Kafka topics {}.{{pin,geo,user}}", id.as_str());
    step!(
        "2/4 Kafka sink: {} MSK batches, {} records: landed under {}, {} tabled, {} quarantined",
        r.batches, r.received, landing.display(), r.tabled, r.quarantined
    );
    anyhow::ensure!(r.received == sent, "the sink received {} records of the {sent} sent", r.received);

    let report = clean(id, &landing, &tables).await?;
    let run = analyze(id, &tables, &out).await?;
    if json {
        let total = report.total();
        eprintln!("3/4 catch-up from the landing: {} tabled (exactly once, so nothing new)", total.tabled);
        eprintln!("4/4 analysis done");
        let mut v = ui::results_json(&run, &tables, &out)?;
        v["posts"] = cfg.posts.into();
        v["reposts"] = cfg.reposts().into();
        v["records_sent"] = sent.into();
        v["sink"] = serde_json::to_value(&r)?;
        v["catch_up"] = serde_json::to_value(total)?;
        v["seconds"] = started.elapsed().as_secs_f64().into();
        println!("{v}");
        return Ok(());
    }
    print!("3/4 catch-up from the landing (exactly once, so nothing new): ");
    ui::print_clean(&report, &tables, &id.quarantine_table());
    println!("4/4 analysis done");
    ui::print_results(&run, &tables, &out);
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

