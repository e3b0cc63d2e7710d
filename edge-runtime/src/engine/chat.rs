//! Chat prompts: renders a conversation with the model's own Jinja chat template (the
//! `chat_template` of `tokenizer_config.json`), the way Hugging Face `apply_chat_template` does.

use anyhow::{Context, Result};
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

fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    /// Compiles `source` (Jinja). `bos_token`/`eos_token` are exposed to the template by name.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
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
    /// answer starts.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .context("chat template missing")?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .context("rendering the chat template failed")
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
    fn a_broken_template_is_reported() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
