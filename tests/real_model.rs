//! The engine on the real default model, SmolLM2-135M-Instruct, imported from its GGUF.

use e2e_tests::real_model_dir;
use edge_runtime::engine::WeightFormat;
use edge_runtime::engine::generate::{Gate, GenerateOptions, generate};
use edge_runtime::engine::model::{KvState, LoadedModel};

const PROMPT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

fn greedy_answer(format: WeightFormat, max_tokens: usize) -> String {
    let model = LoadedModel::load(&real_model_dir(format)).expect("the imported model loads");
    let ids = model.tokenizer.encode(PROMPT).expect("encode");
    let mut state = KvState::new(model).expect("state");
    let opts = GenerateOptions {
        max_tokens,
        ..Default::default()
    };
    let mut text = String::new();
    generate(&mut state, &ids, &opts, &mut |_| Gate::Continue, &mut |t| {
        text.push_str(t)
    })
    .expect("generate");
    text
}

#[test]
fn f32_import_answers_the_capital_of_france() {
    let answer = greedy_answer(WeightFormat::F32, 12);
    assert!(
        answer.starts_with("The capital of France is Paris."),
        "answer was {answer:?}"
    );
}

#[test]
fn q4_import_answers_the_capital_of_france() {
    let answer = greedy_answer(WeightFormat::Q4, 12);
    assert!(
        answer.starts_with("The capital of France is Paris."),
        "answer was {answer:?}"
    );
}

#[test]
fn prompt_ids_equal_the_gguf_vocabulary() {
    let model = LoadedModel::load(&real_model_dir(WeightFormat::F32)).expect("loads");
    // Ids of the GGUF's own token list for this hand split of the prompt.
    let expected = [
        1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
    ];
    assert_eq!(model.tokenizer.encode(PROMPT).expect("encode"), expected);
}

#[test]
fn tokenizer_round_trips_mixed_text() {
    let model = LoadedModel::load(&real_model_dir(WeightFormat::F32)).expect("loads");
    let text = "On 2024-03-15 at 07:45, the Pi 5 hit 84.2 °C (!) — so we paced it… 🌡️🔥 «fine» \
                naïve café, 100% done; tabs\tand\nnewlines, emoji 👩‍🔧 too.";
    let ids = model.tokenizer.encode(text).expect("encode");
    assert_eq!(model.tokenizer.decode(&ids, false).expect("decode"), text);
}
