//! Any bytes as a `PUT /transactions` body, through the parser the handler calls: it never
//! panics, and every event it keeps carries its JSON exactly as sent (a slice of the body).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(parsed) = conclave_agent::appservice::parse_transaction(body.to_vec()) {
        let text = std::str::from_utf8(body).expect("a parsed body is UTF-8");
        for event in &parsed.events {
            let json = event.json.text().expect("an event's JSON is UTF-8");
            assert!(text.contains(json), "an event's JSON is a slice of the body");
        }
    }
});
