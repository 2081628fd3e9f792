//! Progress messages of coding agents: one message edited in place (to be built on the shared
//! progress module).

/// Live progress messages.
#[derive(Default)]
pub struct Progress {}
