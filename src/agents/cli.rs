//! The coding-agent commands (`post`, `inbox`, …): an HTTP client of `/conclave/v1`.
