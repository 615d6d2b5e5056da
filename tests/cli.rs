//! The `moe` binary as a user meets it: help, unknown input, bad thread counts.

use std::process::{Command, Output};

fn moe(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moe"));
    cmd.args(args).env_remove("MOE_THREADS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the moe binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_every_command() {
    for args in [&["--help"][..], &["help"], &[]] {
        let out = moe(args, &[]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for cmd in ["train", "generate", "init", "upcycle", "analyze", "tokenizer-train", "tokenize", "bench"]
        {
            assert!(text.contains(&format!("  {cmd} ")), "help misses '{cmd}':\n{text}");
        }
        assert!(text.contains("--threads N"));
    }
}

#[test]
fn unknown_commands_fail_with_a_message() {
    let out = moe(&["fly"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("command 'fly': unknown command"), "{}", stderr(&out));
    assert!(stderr(&out).contains("HINT: `moe --help`"));
}

#[test]
fn bad_flags_and_thread_counts_are_errors_not_panics() {
    // (arguments, environment, the message stderr must contain)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (&["bench", "--threads", "0"], &[], "--threads: expected a positive integer, got '0'"),
        (&["bench", "--threads"], &[], "flag --threads: needs a value"),
        (&["bench", "--speed", "9"], &[], "moe bench: flag --speed: unknown flag"),
        (&["bench"], &[("MOE_THREADS", "many")], "MOE_THREADS: expected a positive integer, got 'many'"),
    ];
    for (args, env, want) in cases {
        let out = moe(args, env);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?} panicked");
    }
}

#[test]
fn bench_help_describes_its_flags() {
    let out = moe(&["bench", "--help"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--reps"));
}

#[test]
fn device_flag_errors_name_the_device_and_never_panic() {
    let out = moe(&["train", "--device", "tpu"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--device tpu: unknown device"), "{}", stderr(&out));
    // Whatever this machine and build: no `cuda` feature or no driver is an error naming
    // `--device cuda` with a hint; with a GPU, the command goes on to the missing input.
    // Never a panic.
    let missing = std::env::temp_dir().join("moe-cli-test-no-such-dir");
    let missing = missing.to_str().unwrap();
    for args in [
        &["train", "--device", "cuda", "--corpus", missing, "--out", missing][..],
        &["generate", "--device", "cuda", "--model", missing, "--prompt", "x"],
    ] {
        let out = moe(args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        let device_error = err.contains("--device cuda") && err.contains("HINT:");
        assert!(device_error || err.contains(missing), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}
