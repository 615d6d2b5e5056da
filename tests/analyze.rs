//! `moe analyze`: the routing statistics on synthetic routers (one that routes by token id
//! alone scores 100% specialisation, a random one scores chance), by hand, and the command.

mod common;

use moe::analyze::{agreement, drop_by_position, shuffled_baseline, specialisation, MIN_SEEN};
use moe::rng::Rng;
use std::path::Path;
use std::process::Command;

const E: usize = 8;
const K: usize = 2;

/// 4,000 ids drawn from 50 (Zipf-ish: low ids more often).
fn text_ids(rng: &mut Rng) -> Vec<u32> {
    (0..4000).map(|_| (rng.below(50) * rng.below(50) / 50) as u32).collect()
}

#[test]
fn a_router_that_looks_only_at_the_token_id_is_fully_specialised() {
    let mut rng = Rng::new(1);
    let ids = text_ids(&mut rng);
    // Experts are a function of the id: (id mod E, (id + 3) mod E).
    let experts: Vec<u32> = ids.iter().flat_map(|&id| [id % E as u32, (id + 3) % E as u32]).collect();
    let (mean, per_id) = specialisation(&ids, &experts, K, E, MIN_SEEN);
    assert_eq!(mean, 1.0);
    assert!(per_id.iter().all(|&(_, seen, share)| seen >= MIN_SEEN && share == 1.0));
    let blind = shuffled_baseline(&ids, &experts, K, E, MIN_SEEN, 0);
    assert!(blind < 0.7, "shuffled ids lose the specialisation: {blind}");
}

#[test]
fn a_random_router_scores_chance() {
    let mut rng = Rng::new(2);
    let ids = text_ids(&mut rng);
    let experts: Vec<u32> = ids
        .iter()
        .flat_map(|_| {
            let a = rng.below(E);
            let b = (a + 1 + rng.below(E - 1)) % E;
            [a as u32, b as u32]
        })
        .collect();
    let (mean, _) = specialisation(&ids, &experts, K, E, MIN_SEEN);
    let blind = shuffled_baseline(&ids, &experts, K, E, MIN_SEEN, 0);
    // Chance: K/E = 25% per expert, inflated a little by the max over E experts of few draws.
    assert!((0.25..0.6).contains(&mean), "{mean}");
    assert!((mean - blind).abs() < 0.03, "random routing {mean} vs shuffled {blind}");
}

#[test]
fn agreement_and_drops_by_hand() {
    // Top-2 sets per position: {0,1} {2,3} {4,5}; the second run: {1,0} {2,4} {4,5}.
    assert_eq!(agreement(&[0, 1, 2, 3, 4, 5], &[1, 0, 2, 4, 4, 5], 2), 2.0 / 3.0);
    // Two sequences of 3 positions, K = 2: dropped picks at (s0, p2, rank 1), (s1, p2, both), (s1, p1, rank 0).
    let dropped = [
        false, false, false, false, false, true, // sequence 0: positions 0, 1, 2
        false, false, true, false, true, true, // sequence 1
    ];
    assert_eq!(drop_by_position(&dropped, 3, 2), [0.0, 0.25, 0.75]);
}

#[test]
fn the_command_prints_its_tables_and_writes_plots() {
    let dir = std::env::temp_dir().join(format!("moe-analyze-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let moe = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_moe")).args(args).output().unwrap();
    let model = dir.join("model");
    common::tiny_model_with_olmo_tokenizer(&model);
    let text = root.join("data/shakespeare/hamlet.txt");
    let m = model.to_str().unwrap();
    let args =
        ["analyze", "--model", m, "--text", text.to_str().unwrap(), "--seq", "64", "--max-tokens", "2048"];
    let out = moe(&[&args[..], &["--compare", m, "--capacity-factor", "1.0"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("reading 2,048 tokens") && stdout.contains("as 32 sequences of 64"), "{stdout}");
    assert!(stdout.contains("| layer | this model | ids shuffled |"), "{stdout}");
    assert!(stdout.contains("| 1 | 100.0% |"), "a model compared with itself agrees: {stdout}");
    assert!(stdout.contains("drops by position (capacity factor 1)"), "{stdout}");
    for svg in ["specialisation.svg", "agreement.svg", "drops.svg"] {
        assert!(
            std::fs::read_to_string(model.join("analysis").join(svg)).unwrap().starts_with("<svg"),
            "{svg}"
        );
    }
    // Expert choice has no token picks to analyse: a clear error, not a panic.
    let config_path = model.join("config.json");
    let text_config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, text_config.replacen('{', r#"{"moe_routing": "expert_choice","#, 1))
        .unwrap();
    let out = moe(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes by expert choice"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
