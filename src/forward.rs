//! `moe forward`: one forward (and optionally backward) pass of a checkpoint on token ids,
//! reporting exactly what Hugging Face reports, for checking against transformers.

use crate::autograd::Tape;
use crate::cli::Args;
use crate::error::{Error, Result};
use crate::model::config::OlmoeConfig;
use crate::model::hf;
use crate::model::moe::LoadBalance;
use crate::model::olmoe::{forward, losses, next_token_targets, weight_grads, Weights};
use crate::npy::{self, Npy};
use crate::safetensors::write_f32;
use crate::tensor::Tensor;
use std::path::Path;

pub const HELP: &str = r"moe forward --model DIR --ids IDS.npy [--out LOGITS.npy] [--grads GRADS.safetensors]
  Runs the model in DIR (Hugging Face layout) on IDS, an integer array [batch, seq], and prints
  loss (next-token cross-entropy), aux_loss (HF's load_balancing_loss_func: pooled over layers,
  no division by k) and z_loss (mean over layers and tokens of logsumexp(router logits)^2).
  --out   writes the f32 logits [batch, seq, vocab]
  --grads writes d(loss + router_aux_loss_coef * aux_loss)/d(every weight), by HF name
";

pub fn run(args: &Args) -> Result<()> {
    if args.has("help") {
        print!("{HELP}");
        return Ok(());
    }
    args.check(&["model", "ids", "out", "grads"])?;
    let (model_dir, ids_path) =
        (Path::new(args.required("model", HELP)?), Path::new(args.required("ids", HELP)?));
    let (config, weights) = hf::load(model_dir)?;
    let (ids, batch, seq) = read_ids(ids_path, config.vocab_size)?;
    let report = evaluate(&config, &weights, &ids, batch, seq, args.has("grads"));
    for (name, value) in [("loss", report.loss), ("aux_loss", report.aux_loss), ("z_loss", report.z_loss)] {
        println!("{name} {value}");
    }
    if let Some(path) = args.value("out")? {
        npy::write(Path::new(path), &Npy::from_tensor(&report.logits))?;
    }
    if let (Some(path), Some(grads)) = (args.value("grads")?, &report.grads) {
        let refs: Vec<(&str, &Tensor)> = grads.iter().map(|(n, t)| (n.as_str(), t)).collect();
        write_f32(Path::new(path), &refs, &[])?;
    }
    Ok(())
}

/// What `moe forward` reports for one batch.
pub struct Report {
    /// (batch, seq, vocab)
    pub logits: Tensor,
    pub loss: f32,
    pub aux_loss: f32,
    pub z_loss: f32,
    /// d(loss + router_aux_loss_coef · aux_loss) / d(weight), by HF name, when asked for.
    pub grads: Option<Vec<(String, Tensor)>>,
}

/// One forward pass (and backward, with `with_grads`) of `ids`, `batch` × `seq`, with HF's
/// loss normalisation.
pub fn evaluate(
    config: &OlmoeConfig,
    weights: &Weights<Tensor>,
    ids: &[u32],
    batch: usize,
    seq: usize,
    with_grads: bool,
) -> Report {
    let mut tape = Tape::new();
    let vars = weights.map(|t| tape.param(t.clone()));
    let out = forward(&mut tape, &vars, config, ids, batch, seq);
    let targets = next_token_targets(ids, seq);
    let l = losses(&mut tape, &out, config, &targets, LoadBalance::HuggingFace);
    let item = |v| tape.value(v).item();
    let (loss, aux_loss, z_loss) = (item(l.ce), item(l.aux), item(l.z));
    let logits = tape.value(out.logits).reshape(&[batch, seq, config.vocab_size]);
    let grads = with_grads.then(|| {
        let scaled_aux = tape.scale(l.aux, config.router_aux_loss_coef);
        let total = tape.add(l.ce, scaled_aux);
        let grads = tape.backward(total);
        hf::hf_tensors(&weight_grads(weights, &vars, &grads))
    });
    Report { logits, loss, aux_loss, z_loss, grads }
}

/// Token ids from a 2-D integer .npy: (ids row-major, batch, seq), each id < vocab.
pub fn read_ids(path: &Path, vocab: usize) -> Result<(Vec<u32>, usize, usize)> {
    let array = npy::read(path)?;
    let what = || path.display().to_string();
    let &[batch, seq] = array.shape.as_slice() else {
        return Err(Error::invalid(
            what(),
            format!("ids must be a 2-D array [batch, seq], got shape {:?}", array.shape),
        ));
    };
    if batch == 0 || seq == 0 {
        return Err(Error::invalid(what(), format!("ids array [{batch}, {seq}] is empty")));
    }
    let ids =
        array.i64s().map_err(|_| Error::invalid(what(), "ids must be integers (int32, int64 or uint32)"))?;
    ids.iter()
        .map(|&id| match u32::try_from(id) {
            Ok(id) if (id as usize) < vocab => Ok(id),
            _ => Err(Error::invalid(
                what(),
                format!("token id {id} is outside the vocabulary (vocab_size {vocab})"),
            )),
        })
        .collect::<Result<Vec<u32>>>()
        .map(|ids| (ids, batch, seq))
}
