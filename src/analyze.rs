//! `moe analyze`: OpenMoE's three routing findings (SPEC.md §3.8), measured on a checkpoint
//! reading a text.
//! ```text
//! specialisation  for a token id t seen n_t times, c_{t,e} = how many of those times expert e
//!                 was among its top-K; share_t = max_e c_{t,e} / n_t (1: always the same
//!                 expert). Reported per layer as the n-weighted mean over ids seen ≥ MIN_SEEN
//!                 times, beside the same statistic with the ids shuffled across positions: what
//!                 a router that ignores the token id (a context-only router) would score.
//! early learning  with --compare B: the share of positions whose top-K expert set is the same
//!                 in A and in B, per layer (OpenMoE: fixed early in training).
//! drop by position with capacity routing (the config's, or --capacity-factor): the share of
//!                 picks dropped at each position of the sequence, over sequences and layers.
//! ```
//! The model runs as in evaluation (`OlmoeConfig::for_evaluation`) on whole sequences of
//! --seq tokens; weights are loaded in f32.

use crate::autograd::Tape;
use crate::cli::{thousands, Args};
use crate::error::{Error, Result};
use crate::model::config::{OlmoeConfig, Routing};
use crate::model::hf;
use crate::model::olmoe::{forward, Weights};
use crate::plot::{line_svg, Curve};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

pub const HELP: &str = r"moe analyze --model DIR --text FILE [--compare DIR2] [--out OUT] [FLAGS]
  Measures OpenMoE's three routing findings on DIR reading FILE (encoded with DIR's
  tokenizer.json) and prints tables; writes SVG plots to OUT (default DIR/analysis):
  specialisation per layer against a token-id-blind baseline and the most expert-faithful
  tokens; with --compare, how many tokens keep their top-k experts between DIR and DIR2 (two
  checkpoints of one run); with capacity routing, the dropped share by position.
  --seq T               tokens per sequence (256, at most max_position_embeddings)
  --max-tokens N        read at most N tokens of FILE (65536)
  --capacity-factor X   route with OpenMoE's capacity (min capacity 4) at factor X
";

/// Token ids seen fewer times than this are left out of the specialisation mean.
pub const MIN_SEEN: usize = 8;
const SEQUENCES_PER_PASS: usize = 8;

/// Every layer's routing of a text.
pub struct Recorded {
    /// The ids read: whole sequences of `seq`.
    pub ids: Vec<u32>,
    pub seq: usize,
    pub k: usize,
    pub num_experts: usize,
    /// Per layer: each position's K experts (position-major, best first).
    pub experts: Vec<Vec<u32>>,
    /// Per layer: whether each of those picks was dropped (capacity routing).
    pub dropped: Vec<Vec<bool>>,
}

/// Runs `weights` over `ids` (whole sequences of `seq`) and records every layer's routing.
pub fn record(config: &OlmoeConfig, weights: &Weights<Tensor>, ids: &[u32], seq: usize) -> Recorded {
    let config = config.for_evaluation();
    let layers = config.num_hidden_layers;
    let (mut experts, mut dropped) = (vec![Vec::new(); layers], vec![Vec::new(); layers]);
    for pass in ids.chunks(seq * SEQUENCES_PER_PASS) {
        let mut tape = Tape::new();
        let vars = weights.map(|w| tape.constant(w.clone()));
        let out = forward(&mut tape, &vars, &config, pass, pass.len() / seq, seq);
        for (l, r) in out.routers.iter().enumerate() {
            experts[l].extend_from_slice(&r.experts);
            dropped[l].extend_from_slice(&r.dropped);
        }
    }
    let (k, num_experts) = (config.num_experts_per_tok, config.num_experts);
    Recorded { ids: ids.to_vec(), seq, k, num_experts, experts, dropped }
}

/// One layer's specialisation: the n-weighted mean share, and (id, times seen, share) for every
/// id seen at least `min_seen` times.
pub fn specialisation(
    ids: &[u32],
    experts: &[u32],
    k: usize,
    num_experts: usize,
    min_seen: usize,
) -> (f64, Vec<(u32, usize, f64)>) {
    assert_eq!(
        experts.len(),
        ids.len() * k,
        "specialisation: {} picks for {} ids × k {k}",
        experts.len(),
        ids.len()
    );
    let mut counts: std::collections::BTreeMap<u32, (usize, Vec<usize>)> = Default::default();
    for (&id, picks) in ids.iter().zip(experts.chunks_exact(k)) {
        let entry = counts.entry(id).or_insert_with(|| (0, vec![0; num_experts]));
        entry.0 += 1;
        picks.iter().for_each(|&e| entry.1[e as usize] += 1);
    }
    let per_id: Vec<(u32, usize, f64)> = counts
        .into_iter()
        .filter(|(_, (seen, _))| *seen >= min_seen)
        .map(|(id, (seen, by_expert))| (id, seen, *by_expert.iter().max().unwrap_or(&0) as f64 / seen as f64))
        .collect();
    let seen: usize = per_id.iter().map(|&(_, n, _)| n).sum();
    let mean = per_id.iter().map(|&(_, n, share)| n as f64 * share).sum::<f64>() / seen.max(1) as f64;
    (mean, per_id)
}

/// The same statistic with the ids shuffled across positions (seeded): what routing that does
/// not depend on the token id scores.
pub fn shuffled_baseline(
    ids: &[u32],
    experts: &[u32],
    k: usize,
    num_experts: usize,
    min_seen: usize,
    seed: u64,
) -> f64 {
    let mut shuffled = ids.to_vec();
    Rng::new(seed).shuffle(&mut shuffled);
    specialisation(&shuffled, experts, k, num_experts, min_seen).0
}

/// The share of positions whose top-K expert set is the same in `a` and `b`.
pub fn agreement(a: &[u32], b: &[u32], k: usize) -> f64 {
    assert_eq!(a.len(), b.len(), "agreement: {} and {} picks", a.len(), b.len());
    let sorted = |p: &[u32]| {
        let mut v = p.to_vec();
        v.sort_unstable();
        v
    };
    let same = a.chunks_exact(k).zip(b.chunks_exact(k)).filter(|(x, y)| sorted(x) == sorted(y)).count();
    same as f64 / (a.len() / k).max(1) as f64
}

/// The share of picks dropped at each position 0 … seq−1, over sequences and ranks.
pub fn drop_by_position(dropped: &[bool], seq: usize, k: usize) -> Vec<f64> {
    let mut by_position = vec![0usize; seq];
    let sequences = dropped.len() / (seq * k);
    for (i, picks) in dropped.chunks_exact(k).enumerate() {
        by_position[i % seq] += picks.iter().filter(|&&d| d).count();
    }
    by_position.iter().map(|&d| d as f64 / (sequences * k).max(1) as f64).collect()
}

pub fn run(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    args.check(&["model", "text", "compare", "out", "seq", "max-tokens", "capacity-factor"])?;
    let dir = Path::new(args.required("model", HELP)?);
    let text_path = Path::new(args.required("text", HELP)?);
    let out = args.value("out")?.map_or_else(|| dir.join("analysis"), PathBuf::from);
    let (mut config, weights) = hf::load(dir)?;
    if let Some(factor) = args.number("capacity-factor")? {
        if factor <= 0.0 {
            return Err(Error::invalid("--capacity-factor", format!("must be positive, got {factor}")));
        }
        let factor = factor as f32;
        config.routing = Routing::TokenChoiceCapacity {
            capacity_factor: factor,
            eval_capacity_factor: factor,
            min_capacity: 4,
        };
    }
    if let Routing::ExpertChoice { .. } = config.routing {
        return Err(Error::invalid(
            format!("moe analyze: {}", dir.join("config.json").display()),
            "routes by expert choice; these statistics are about tokens choosing experts (token choice)",
        ));
    }
    let seq = args.count("seq")?.unwrap_or(256.min(config.max_position_embeddings));
    if seq > config.max_position_embeddings {
        return Err(Error::invalid(
            "--seq",
            format!("{seq} is past the model's max_position_embeddings {}", config.max_position_embeddings),
        ));
    }
    let max_tokens = args.count("max-tokens")?.unwrap_or(65536);
    if max_tokens < seq {
        return Err(Error::invalid(
            "--max-tokens",
            format!("{max_tokens} is less than one sequence (--seq {seq})"),
        ));
    }
    let tokenizer_path = dir.join("tokenizer.json");
    if !tokenizer_path.is_file() {
        return Err(Error::invalid(
            format!("moe analyze: {}", dir.display()),
            "holds no tokenizer.json to encode the text with",
        ));
    }
    let tokenizer = Tokenizer::load(&tokenizer_path)?;
    let text = std::fs::read_to_string(text_path)
        .map_err(|source| Error::Io { path: text_path.to_path_buf(), source })?;
    let mut ids = tokenizer.encode(&text);
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= config.vocab_size) {
        return Err(Error::invalid(
            text_path.display().to_string(),
            format!("encodes to token id {id}, outside the model's vocab_size {}", config.vocab_size),
        ));
    }
    ids.truncate(max_tokens.min(ids.len()) / seq * seq);
    if ids.is_empty() {
        return Err(Error::invalid(
            text_path.display().to_string(),
            format!("holds fewer than one sequence of {seq} tokens"),
        ));
    }
    std::fs::create_dir_all(&out).map_err(|source| Error::Io { path: out.clone(), source })?;
    let rec = record(&config, &weights, &ids, seq);
    println!(
        "{}: {} layers, {} experts top-{}, reading {} tokens of {} as {} sequences of {seq}",
        dir.display(),
        config.num_hidden_layers,
        rec.num_experts,
        rec.k,
        thousands(ids.len()),
        text_path.display(),
        ids.len() / seq
    );
    report_specialisation(&rec, &tokenizer, &out)?;
    if let Some(other) = args.value("compare")? {
        report_agreement(&rec, &config, Path::new(other), &out)?;
    }
    if matches!(config.for_evaluation().routing, Routing::TokenChoiceCapacity { .. }) {
        report_drops(&rec, &config, &out)?;
    }
    println!("plots: {}", out.display());
    Ok(())
}

fn write_svg(path: &Path, svg: String) -> Result<()> {
    std::fs::write(path, svg).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn report_specialisation(rec: &Recorded, tokenizer: &Tokenizer, out: &Path) -> Result<()> {
    let layers = rec.experts.len();
    println!("\nspecialisation: the share of a token id's routings that include its most frequent expert");
    println!(
        "(ids seen ≥ {MIN_SEEN} times; beside it, the same with ids shuffled: a router blind to the id)"
    );
    println!("| layer | this model | ids shuffled |");
    println!("|---:|---:|---:|");
    let (mut ours, mut blind) = (Vec::new(), Vec::new());
    let mut last = Vec::new();
    for l in 0..layers {
        let (mean, per_id) = specialisation(&rec.ids, &rec.experts[l], rec.k, rec.num_experts, MIN_SEEN);
        let base = shuffled_baseline(&rec.ids, &rec.experts[l], rec.k, rec.num_experts, MIN_SEEN, l as u64);
        println!("| {l} | {:.1}% | {:.1}% |", 100.0 * mean, 100.0 * base);
        ours.push((l as f64, 100.0 * mean));
        blind.push((l as f64, 100.0 * base));
        last = per_id;
    }
    last.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.cmp(&a.1)));
    println!("\nmost expert-faithful tokens (layer {}): share, times seen", layers - 1);
    for &(id, seen, share) in last.iter().take(12) {
        println!("  {:>5.1}%  {seen:>6}  {:?}", 100.0 * share, tokenizer.decode(&[id]));
    }
    write_svg(
        &out.join("specialisation.svg"),
        line_svg(
            "token-id specialisation by layer",
            "layer",
            "share routed to the id's top expert, %",
            &[
                Curve { label: "this model", color: "#1f77b4", points: &ours },
                Curve { label: "ids shuffled", color: "#999", points: &blind },
            ],
        ),
    )
}

fn report_agreement(rec: &Recorded, config: &OlmoeConfig, other: &Path, out: &Path) -> Result<()> {
    let (other_config, other_weights) = hf::load(other)?;
    let same_shape =
        (
            other_config.vocab_size,
            other_config.num_hidden_layers,
            other_config.num_experts,
            other_config.num_experts_per_tok,
        ) == (config.vocab_size, config.num_hidden_layers, config.num_experts, config.num_experts_per_tok);
    if !same_shape {
        return Err(Error::invalid(
            format!("--compare {}", other.display()),
            "differs from --model in vocab_size, layers, experts or top-k: not two checkpoints of one run",
        ));
    }
    // Routed the same way (a --capacity-factor applies to both).
    let other_config = OlmoeConfig { routing: config.routing, ..other_config };
    let theirs = record(&other_config, &other_weights, &rec.ids, rec.seq);
    println!(
        "\nearly routing learning: the share of tokens with the same top-{} experts in {}",
        rec.k,
        other.display()
    );
    println!("| layer | same top-k set |");
    println!("|---:|---:|");
    let mut points = Vec::new();
    for (l, (a, b)) in rec.experts.iter().zip(&theirs.experts).enumerate() {
        let share = agreement(a, b, rec.k);
        println!("| {l} | {:.1}% |", 100.0 * share);
        points.push((l as f64, 100.0 * share));
    }
    write_svg(
        &out.join("agreement.svg"),
        line_svg(
            "same top-k experts in both checkpoints",
            "layer",
            "tokens, %",
            &[Curve { label: "agreement", color: "#1f77b4", points: &points }],
        ),
    )
}

fn report_drops(rec: &Recorded, config: &OlmoeConfig, out: &Path) -> Result<()> {
    // The mean over layers of each layer's dropped share by position.
    let mut by_position = vec![0.0; rec.seq];
    for layer in &rec.dropped {
        for (total, d) in by_position.iter_mut().zip(drop_by_position(layer, rec.seq, rec.k)) {
            *total += d / rec.dropped.len() as f64;
        }
    }
    let factor = match config.for_evaluation().routing {
        Routing::TokenChoiceCapacity { capacity_factor, .. } => capacity_factor,
        _ => unreachable!("called for capacity routing"),
    };
    println!("\ndrops by position (capacity factor {factor}): the share of picks dropped, all layers");
    println!("| positions | dropped |");
    println!("|---|---:|");
    let tenth = rec.seq.div_ceil(10);
    for start in (0..rec.seq).step_by(tenth) {
        let part = &by_position[start..(start + tenth).min(rec.seq)];
        println!(
            "| {start}–{} | {:.1}% |",
            start + part.len() - 1,
            100.0 * part.iter().sum::<f64>() / part.len() as f64
        );
    }
    let points: Vec<(f64, f64)> =
        by_position.iter().enumerate().map(|(p, &d)| (p as f64, 100.0 * d)).collect();
    write_svg(
        &out.join("drops.svg"),
        line_svg(
            "dropped picks by position",
            "position",
            "dropped, %",
            &[Curve { label: "dropped", color: "#d62728", points: &points }],
        ),
    )
}
