//! The wharf conformance suite against the in-memory backend.

use wharf_memory::MemoryBackend;

/// A fresh in-memory broker for each test, so tests share nothing.
async fn backend() -> MemoryBackend {
    MemoryBackend::new()
}

wharf_testkit::conformance_suite!(backend);
