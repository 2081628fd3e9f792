//! Any text as a message body, through the command parser: it never panics, and it parses the
//! same text the same way every time (it is pure).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &str| {
    let command = conclave_agent::syntax::parse(body);
    assert_eq!(command, conclave_agent::syntax::parse(body));
});
