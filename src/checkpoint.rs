//! A checkpoint directory in the Hugging Face layout: one `model.safetensors`, or shards
//! listed by `model.safetensors.index.json`:
//! ```text
//! {"metadata": {"total_size": 123456},
//!  "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors", …}}
//! ```
//! Each shard is opened once (see `safetensors.rs`); the index and the shards must agree
//! tensor for tensor. Like `safetensors.rs`, this knows nothing of the model.

use crate::error::{Error, Result};
use crate::json::{self, Value};
use crate::safetensors::{short, tensor_what, SafeTensors, TensorInfo};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A checkpoint directory in the Hugging Face layout: `model.safetensors`, or shards listed by
/// `model.safetensors.index.json` (`{"metadata": {…}, "weight_map": {tensor: shard file}}`).
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<SafeTensors>,
    names: Vec<String>,
    shard_of: HashMap<String, usize>,
    metadata: Vec<(String, String)>,
}

impl Checkpoint {
    /// Opens a checkpoint directory (or a single `.safetensors` file). Each shard is opened
    /// once; the index and the shards must agree tensor for tensor.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        if dir.is_file() {
            return Checkpoint::single(dir, SafeTensors::open(dir)?);
        }
        let (single, index) = (dir.join(SINGLE_FILE), dir.join(INDEX_FILE));
        if single.is_file() {
            Checkpoint::single(dir, SafeTensors::open(&single)?)
        } else if index.is_file() {
            Checkpoint::sharded(dir, &index)
        } else {
            let rule = format!("holds neither {SINGLE_FILE} nor {INDEX_FILE}");
            let hint = "point at a directory written by this crate or downloaded from the Hugging Face Hub";
            Err(Error::invalid(dir.display().to_string(), rule).with_hint(hint))
        }
    }

    fn single(dir: &Path, file: SafeTensors) -> Result<Checkpoint> {
        let names: Vec<String> = file.names().into_iter().map(String::from).collect();
        let shard_of = names.iter().map(|n| (n.clone(), 0)).collect();
        let metadata = file.metadata().to_vec();
        Ok(Checkpoint { dir: dir.to_path_buf(), shards: vec![file], names, shard_of, metadata })
    }

    fn sharded(dir: &Path, index_path: &Path) -> Result<Checkpoint> {
        let index_name = index_path.display().to_string();
        let text = fs::read_to_string(index_path)
            .map_err(|source| Error::Io { path: index_path.to_path_buf(), source })?;
        let root = json::parse(&text).map_err(|e| e.in_file(index_path))?;
        if root.as_object().is_none() {
            return Err(Error::invalid(index_name, format!("must be a JSON object, got {}", short(&root))));
        }
        let Some(weight_map) = root.get("weight_map").and_then(Value::as_object) else {
            return Err(Error::invalid(
                index_name,
                "needs a \"weight_map\" object: tensor name → shard file",
            ));
        };
        let metadata: Vec<(String, String)> = match root.get("metadata") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(pairs)) => pairs
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_json(), String::from)))
                .collect(),
            Some(other) => {
                return Err(Error::invalid(
                    index_name,
                    format!("\"metadata\" must be an object, got {}", short(other)),
                ))
            }
        };

        // Which shard each tensor should be in, by the index.
        let (mut files, mut names, mut shard_of) = (Vec::<&str>::new(), Vec::new(), HashMap::new());
        for (tensor, file) in weight_map {
            let err = |rule: String| Error::invalid(tensor_what(&index_name, tensor), rule);
            let file = file
                .as_str()
                .ok_or_else(|| err(format!("shard must be a file name, got {}", short(file))))?;
            let mut parts = Path::new(file).components();
            let plain = matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None));
            if !plain || file.contains(['/', '\\']) {
                return Err(err(format!("shard \"{file}\" must be a plain file name inside the directory")));
            }
            let shard = files.iter().position(|&f| f == file).unwrap_or_else(|| {
                files.push(file);
                files.len() - 1
            });
            shard_of.insert(tensor.clone(), shard); // unique: crate::json refuses duplicate keys
            names.push(tensor.clone());
        }

        let mut shards = Vec::with_capacity(files.len());
        for &file in &files {
            let path = dir.join(file);
            if !path.is_file() {
                let rule = format!("shard file is missing, though {INDEX_FILE} maps tensors to it");
                return Err(Error::invalid(path.display().to_string(), rule));
            }
            shards.push(SafeTensors::open(&path)?);
        }

        // The shards must hold exactly the tensors the index puts in them.
        let mut found_in: HashMap<&str, usize> = HashMap::new();
        for (i, shard) in shards.iter().enumerate() {
            for tensor in shard.names() {
                let what = tensor_what(&dir.display().to_string(), tensor);
                if let Some(j) = found_in.insert(tensor, i) {
                    let rule = format!("present in two shards, {} and {}", files[j], files[i]);
                    return Err(Error::invalid(what, rule));
                }
                if !shard_of.contains_key(tensor) {
                    return Err(Error::invalid(
                        what,
                        format!("in shard {} but not listed in {INDEX_FILE}", files[i]),
                    ));
                }
            }
        }
        for tensor in &names {
            let shard = shard_of[tensor];
            if shards[shard].info(tensor).is_none() {
                let rule = format!("{INDEX_FILE} puts it in shard {}, which does not hold it", files[shard]);
                return Err(Error::invalid(tensor_what(&dir.display().to_string(), tensor), rule));
            }
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), shards, names, shard_of, metadata })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tensor names: the index's order, or header order for a single file.
    pub fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// The single file's `__metadata__`, or the index's `"metadata"` (values that are not
    /// strings, such as `total_size`, as JSON text).
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    fn shard(&self, name: &str) -> Option<&SafeTensors> {
        self.shard_of.get(name).map(|&i| &self.shards[i])
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.shard(name)?.info(name)
    }

    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.shard(name)?.bytes(name)
    }

    pub fn to_tensor(&self, name: &str) -> Result<Tensor> {
        match self.shard(name) {
            Some(shard) => shard.to_tensor(name),
            None => Err(Error::invalid(
                tensor_what(&self.dir.display().to_string(), name),
                "no such tensor in the checkpoint",
            )),
        }
    }
}
