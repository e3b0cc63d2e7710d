//! Fuzz target: chat templates and messages through the renderer with its limits (fuel,
//! output bound, literal size). Every template ends in text or an error, never a panic, and
//! the process's peak RSS stays under 512 MB. `THERMO_FUZZ_CASES=N` runs N cases per
//! strategy.

mod fuzz_common;

use edge_runtime::engine::chat::{ChatTemplate, MAX_RENDERED_BYTES, Message, Role};
use proptest::prelude::*;

/// Pieces of Jinja that loop, multiply, concatenate and raise, to recombine.
fn piece() -> impl Strategy<Value = String> {
    let pieces = [
        "{% for m in messages %}",
        "{% endfor %}",
        "{% for i in range(100000) %}",
        "{% for i in range(999999) %}",
        "{% if loop.first %}",
        "{% endif %}",
        "{% set a = 'x' * 999999 %}",
        "{% set a = a ~ a %}",
        "{% set a = a + a %}",
        "{{ a }}",
        "{{ m['content'] }}",
        "{{ m.role }}",
        "{{ messages | length }}",
        "{{ raise_exception('no') }}",
        "{{ bos_token }}",
        "{{ '<|im_start|>' + m['role'] + '\\n' }}",
        "{% if add_generation_prompt %}",
        "{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}",
        "{{ (messages * 99999) | length }}",
        "{%",
        "}}",
        "text",
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set b = 'y' * 99999 %}{% for i in range(999) %}{{ b }}{% endfor %}",
        "{% set ns = namespace(s='ab') %}{% for i in range(30) %}{% set ns.s = ns.s ~ 'c' %}{% endfor %}{{ ns.s }}",
        "{% if add_generation_prompt %}<|assistant|>{% endif %}",
    ];
    prop_oneof![
        (0..pieces.len()).prop_map(move |i| pieces[i].to_owned()),
        "[ -~]{0,16}".prop_map(|s| s),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (0..3u8, "[ -~]{0,64}").prop_map(|(r, text)| {
        let role = match r {
            0 => Role::System,
            1 => Role::User,
            _ => Role::Assistant,
        };
        Message::new(role, text)
    })
}

fn exercise(source: &str, messages: &[Message]) {
    if let Ok(t) = ChatTemplate::new(source, "<s>", "</s>")
        && let Ok(text) = t.render(messages, true)
    {
        assert!(text.len() <= MAX_RENDERED_BYTES);
    }
}

#[test]
fn the_chat_template_renderer_survives_random_templates_in_bounded_memory() {
    let cases = fuzz_common::cases(200);
    let strategy = (
        proptest::collection::vec(piece(), 0..12),
        proptest::collection::vec(message(), 0..6),
    );
    fuzz_common::runner(cases)
        .run(&strategy, |(pieces, messages)| {
            exercise(&pieces.concat(), &messages);
            Ok(())
        })
        .expect("recombined templates");

    fuzz_common::runner(cases)
        .run(
            &("[ -~]{0,200}", proptest::collection::vec(message(), 0..4)),
            |(src, msgs)| {
                exercise(&src, &msgs);
                Ok(())
            },
        )
        .expect("random templates");

    fuzz_common::assert_peak_rss_bounded("fuzz_template");
}
