//! Chat prompts: renders a conversation with the model's own Jinja chat template (the
//! `chat_template` of `tokenizer_config.json`), the way Hugging Face `apply_chat_template` does.

use anyhow::{Context, Result, bail};
use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    /// The author.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with the given role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const TEMPLATE_NAME: &str = "chat";

/// Most template instructions one render may run (minijinja's fuel): a conversation of
/// thousands of messages renders in a small part of it; a runaway loop stops with an error.
pub const RENDER_FUEL: u64 = 5_000_000;

/// Longest rendered prompt in bytes; a render that would write more stops with an error.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

/// Most digits an integer literal inside a template's tags may have (values up to 999 999):
/// chat templates count messages, and a huge literal is how a template asks for a huge
/// string (`'x' * 100000000`).
pub const MAX_LITERAL_DIGITS: usize = 6;

/// Output sink that refuses to grow past [`MAX_RENDERED_BYTES`].
struct BoundedOutput {
    text: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len().saturating_add(buf.len()) > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered prompt too long"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The first integer literal longer than [`MAX_LITERAL_DIGITS`] inside `{{ }}` or `{% %}`.
fn oversized_literal(source: &str) -> Option<&str> {
    let mut rest = source;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            _ => {
                rest = after;
                continue;
            }
        };
        let body_end = after.find(close).unwrap_or(after.len());
        let body = &after[..body_end];
        let long = body
            .split(|c: char| !c.is_ascii_digit())
            .find(|run| run.len() > MAX_LITERAL_DIGITS);
        if long.is_some() {
            return long;
        }
        rest = &after[body_end..];
    }
    None
}

fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    /// Compiles `source` (Jinja). `bos_token`/`eos_token` are exposed to the template by name.
    /// Refuses an integer literal of more than [`MAX_LITERAL_DIGITS`] digits in a tag.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        if let Some(literal) = oversized_literal(source) {
            bail!(
                "the model's chat template has the integer {literal}, longer than \
                 {MAX_LITERAL_DIGITS} digits"
            );
        }
        let mut env = Environment::new();
        env.set_fuel(Some(RENDER_FUEL));
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .context("the model's chat template does not parse")?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// answer starts. Fails when the template runs more than [`RENDER_FUEL`] instructions or
    /// writes more than [`MAX_RENDERED_BYTES`].
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .context("chat template missing")?;
        let mut out = BoundedOutput {
            text: Vec::new(),
            overflowed: false,
        };
        let rendered = template.render_captured_to(
            context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            },
            &mut out,
        );
        match rendered {
            Ok(_) => {}
            Err(_) if out.overflowed => bail!(
                "rendering the chat template failed: the prompt would exceed \
                 {MAX_RENDERED_BYTES} bytes"
            ),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => bail!(
                "rendering the chat template failed: it ran more than {RENDER_FUEL} \
                 instructions"
            ),
            Err(e) => return Err(e).context("rendering the chat template failed"),
        }
        String::from_utf8(out.text).context("the chat template rendered invalid UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template, as its tokenizer_config.json ships it.
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn chatml() -> ChatTemplate {
        ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").expect("template compiles")
    }

    #[test]
    fn chatml_inserts_the_default_system_message() {
        let text = chatml()
            .render(&[Message::new(Role::User, "Hi")], true)
            .expect("renders");
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn an_explicit_system_message_replaces_the_default() {
        let msgs = [
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Hi"),
        ];
        let text = chatml().render(&msgs, false).expect("renders");
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn a_template_that_raises_is_an_error_not_a_panic() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "")
            .expect("compiles");
        let err = t.render(&[], true).expect_err("must fail");
        assert!(
            format!("{err:#}").contains("roles must alternate"),
            "{err:#}"
        );
    }

    #[test]
    fn refuses_a_template_that_asks_for_a_huge_string() {
        let err = ChatTemplate::new("{% set a='x'*100000000 %}{{a}}{{a}}{{a}}", "", "")
            .expect_err("a 9-digit literal");
        assert!(format!("{err:#}").contains("100000000"), "{err:#}");
        // Digits in the text around the tags are not literals.
        assert!(ChatTemplate::new("call 0123456789 {{ bos_token }}", "", "").is_ok());
    }

    #[test]
    fn stops_a_render_whose_output_exceeds_the_bound() {
        let t = ChatTemplate::new(
            "{% set a='x'*100000 %}{% for i in range(1000) %}{{a}}{% endfor %}",
            "",
            "",
        )
        .expect("compiles");
        let err = t.render(&[], true).expect_err("100 MB of output");
        assert!(format!("{err:#}").contains("exceed"), "{err:#}");
    }

    #[test]
    fn stops_a_render_that_runs_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "",
            "",
        )
        .expect("compiles");
        let err = t.render(&[], true).expect_err("ten billion iterations");
        assert!(format!("{err:#}").contains("instructions"), "{err:#}");
    }

    #[test]
    fn a_long_conversation_still_renders_within_the_fuel() {
        let msgs: Vec<Message> = (0..2000)
            .map(|i| {
                Message::new(
                    if i % 2 == 0 {
                        Role::User
                    } else {
                        Role::Assistant
                    },
                    "hi",
                )
            })
            .collect();
        let text = chatml().render(&msgs, true).expect("renders");
        assert_eq!(text.matches("<|im_start|>user").count(), 1000);
    }

    #[test]
    fn a_broken_template_is_reported() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
