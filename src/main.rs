//! The `voxseg` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod aligned;
mod cmd;

#[global_allocator]
static ALLOCATOR: aligned::LargeAligned = aligned::LargeAligned;

/// Whole-volume 3D CT organ segmentation and exact, auditable measurement.
///
/// Exit codes: 0 success; 1 one or more cases failed (batch); 2 usage or input error
/// (unreadable, corrupt or invalid file, bad arguments).
///
/// voxseg is not a medical device: every output needs review by a qualified person.
#[derive(Parser)]
#[command(name = "voxseg", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Segment(cmd::segment::SegmentArgs),
    Batch(cmd::batch::BatchArgs),
    Inspect(cmd::inspect::InspectArgs),
    Measure(cmd::measure::MeasureArgs),
    Radiomics(cmd::radiomics::RadiomicsArgs),
    Compare(cmd::compare::CompareArgs),
    Import(cmd::import::ImportArgs),
    Bench(cmd::bench::BenchArgs),
    BatchMerge(cmd::batch_merge::BatchMergeArgs),
    Train(cmd::train::TrainArgs),
    Evaluate(cmd::evaluate::EvaluateArgs),
    Report(cmd::report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Segment(args) => cmd::segment::run(args).map(|()| ExitCode::SUCCESS),
        Command::Batch(args) => cmd::batch::run(args).map(ExitCode::from),
        Command::Inspect(args) => cmd::inspect::run(args).map(|()| ExitCode::SUCCESS),
        Command::Measure(args) => cmd::measure::run(args).map(|()| ExitCode::SUCCESS),
        Command::Radiomics(args) => cmd::radiomics::run(args).map(|()| ExitCode::SUCCESS),
        Command::Compare(args) => cmd::compare::run(args).map(|()| ExitCode::SUCCESS),
        Command::Import(args) => cmd::import::run(args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => cmd::bench::run(args).map(|()| ExitCode::SUCCESS),
        Command::BatchMerge(args) => cmd::batch_merge::run(args).map(|()| ExitCode::SUCCESS),
        Command::Train(args) => cmd::train::run(args).map(|()| ExitCode::SUCCESS),
        Command::Evaluate(args) => cmd::evaluate::run(args),
        Command::Report(args) => cmd::report::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
