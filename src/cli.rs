//! Command-line parsing, written here: `moe COMMAND [--flag value | --switch]…`.
//! Every command declares the flags it takes; anything else is an error that names it.

use crate::cpu::threads;
use crate::error::{Error, Result};

/// (name, one-line summary)
pub const COMMANDS: &[(&str, &str)] = &[
    ("forward", "run a checkpoint on token ids: logits, the three losses, gradients"),
    ("train", "pretrain an OLMoE-style MoE (or dense) model on a text corpus"),
    ("generate", "sample text from a checkpoint with a KV cache"),
    ("init", "write a randomly initialised checkpoint of any size"),
    ("upcycle", "turn a dense checkpoint into an MoE (sparse upcycling)"),
    ("analyze", "measure routing: specialisation, early learning, drops"),
    ("experiments", "small-scale OLMoE ablations: a report of paired runs"),
    ("tokenizer-train", "train a byte-level BPE tokenizer"),
    ("tokenize", "print the token ids of a text"),
    ("detokenize", "print the text of token ids"),
    ("bench", "matmul GFLOP/s against numpy (and the other benchmarks)"),
];

/// Flags every command accepts.
const COMMON_FLAGS: &[&str] = &["threads"];

pub fn help_text() -> String {
    let mut s = String::from(
        "moe — Mixture-of-Experts language models from scratch (OLMoE, OpenMoE)\n\n\
         usage: moe COMMAND [FLAGS]\n\ncommands:\n",
    );
    for (name, summary) in COMMANDS {
        s += &format!("  {name:<16} {summary}\n");
    }
    s +=
        "\nflags for every command:\n  --threads N      CPU threads (default: MOE_THREADS, else all cores)\n";
    s += "\n`moe COMMAND --help` shows a command's own flags.\n";
    s
}

/// A parsed command line.
#[derive(Debug)]
pub struct Args {
    pub command: String,
    flags: Vec<(String, Option<String>)>,
}

impl Args {
    /// Splits `argv` (without the program name) into the command and its flags.
    pub fn parse(argv: &[String]) -> Result<Args> {
        let mut it = argv.iter().peekable();
        let command = match it.next() {
            None => "help".to_string(),
            Some(c) if c == "--help" || c == "-h" => "help".to_string(),
            Some(c) => c.clone(),
        };
        let mut flags = Vec::new();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(Error::invalid(format!("argument '{arg}'"), "expected a flag starting with --"));
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => {
                    let takes_value = it.peek().is_some_and(|next| !next.starts_with("--"));
                    (name.to_string(), if takes_value { it.next().cloned() } else { None })
                }
            };
            flags.push((name, value));
        }
        Ok(Args { command, flags })
    }

    /// Errors on any flag outside `allowed` and the common ones; applies `--threads`.
    pub fn check(&self, allowed: &[&str]) -> Result<()> {
        for (name, _) in &self.flags {
            if !allowed.contains(&name.as_str()) && !COMMON_FLAGS.contains(&name.as_str()) && name != "help" {
                let mut known: Vec<String> =
                    allowed.iter().chain(COMMON_FLAGS).map(|f| format!("--{f}")).collect();
                known.sort();
                return Err(Error::invalid(format!("moe {}: flag --{name}", self.command), "unknown flag")
                    .with_hint(format!("this command takes: {}", known.join(" "))));
            }
        }
        if let Ok(v) = std::env::var("MOE_THREADS") {
            threads::set_num_threads(parse_count("MOE_THREADS", &v)?);
        }
        if let Some(n) = self.count("threads")? {
            threads::set_num_threads(n);
        }
        Ok(())
    }

    /// The error for a missing required flag, with the command's help as the hint.
    pub fn missing(&self, flag: &str, help: &str) -> Error {
        Error::invalid(format!("moe {}", self.command), format!("--{flag} is required")).with_hint(help)
    }

    /// The value of a flag the command cannot run without.
    pub fn required(&self, flag: &str, help: &str) -> Result<&str> {
        self.value(flag)?.ok_or_else(|| self.missing(flag, help))
    }

    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    pub fn value(&self, name: &str) -> Result<Option<&str>> {
        match self.flags.iter().rev().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, Some(v))) => Ok(Some(v)),
            Some((_, None)) => Err(Error::invalid(format!("flag --{name}"), "needs a value")),
        }
    }

    /// A finite number.
    pub fn number(&self, name: &str) -> Result<Option<f64>> {
        self.value(name)?
            .map(|v| {
                v.trim().parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| {
                    Error::invalid(format!("--{name}"), format!("expected a number, got '{v}'"))
                })
            })
            .transpose()
    }

    /// A whole number, zero allowed.
    pub fn whole(&self, name: &str) -> Result<Option<u64>> {
        self.value(name)?
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    Error::invalid(format!("--{name}"), format!("expected a whole number, got '{v}'"))
                })
            })
            .transpose()
    }

    /// A positive integer flag.
    pub fn count(&self, name: &str) -> Result<Option<usize>> {
        self.value(name)?.map(|v| parse_count(&format!("--{name}"), v)).transpose()
    }
}

fn parse_count(what: &str, v: &str) -> Result<usize> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::invalid(what, format!("expected a positive integer, got '{v}'"))),
    }
}

/// A count with thousands separators, for what the commands print: 1561424 → "1,561,424".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
