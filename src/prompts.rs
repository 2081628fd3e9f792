//! The system prompts: files in `prompts/`, built in, each replaceable by a file of the same name
//! in the config directory's `prompts/`.

use crate::config::Config;

/// The built-in prompts; `<config dir>/prompts/<name>.md` replaces one.
const BUILT_IN: &[(&str, &str)] =
    &[("chat", include_str!("../prompts/chat.md")), ("browse", include_str!("../prompts/browse.md"))];

pub fn prompt(config: &Config, name: &str) -> String {
    if let Some(dir) = &config.dir
        && let Ok(text) = std::fs::read_to_string(dir.join("prompts").join(format!("{name}.md")))
    {
        return text;
    }
    BUILT_IN.iter().find(|(n, _)| *n == name).map(|(_, t)| (*t).to_owned()).unwrap_or_default()
}
