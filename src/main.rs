//! The `moe` binary: parse the command line, run the command, print any error and exit 1.

use moe::cli::{self, Args};
use moe::error::{Error, Result};

fn run(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv)?;
    match args.command.as_str() {
        "help" => {
            print!("{}", cli::help_text());
            Ok(())
        }
        "analyze" => moe::analyze::run(&args),
        "bench" => moe::bench::run(&args),
        "experiments" => moe::experiments::run(&args),
        "forward" => moe::forward::run(&args),
        "generate" => moe::generate::run(&args),
        "init" => moe::init_cmd::run(&args),
        "train" => moe::train_cmd::run(&args),
        "upcycle" => moe::upcycle::run(&args),
        "tokenizer-train" => moe::tokenize_cmd::run_train(&args),
        "tokenize" => moe::tokenize_cmd::run_tokenize(&args),
        "detokenize" => moe::tokenize_cmd::run_detokenize(&args),
        other => Err(Error::invalid(format!("command '{other}'"), "unknown command")
            .with_hint("`moe --help` lists the commands")),
    }
}

fn main() {
    moe::cpu::memory::keep_freed_memory();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&argv) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
